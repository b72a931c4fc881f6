//! Routes the bench workload in a loop, for profilers and quick timings:
//! `profile_route SERVICES POLICIES ITERATIONS` (e.g. `perf record … profile_route 100 20 20000`).
//! It prints the time per route and then prices the pieces of a decision one by one.
//! `CAIO_PROFILE_ROUTE_ONLY=1` stops after the routing loop; `CAIO_PROFILE_SEAL_ONLY=1` times
//! only the decision id; `CAIO_PROFILE_DUMP_CORE=1` prints one decision's canonical core.
#![allow(clippy::print_stdout)]

#[path = "../benches/route.rs"]
#[allow(dead_code)]
mod workload;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, p, iters) = (
        args.first().copied().unwrap_or(100),
        args.get(1).copied().unwrap_or(20),
        args.get(2).copied().unwrap_or(1000),
    );
    let registry = caio_registry::MemoryRegistry::with_contracts(workload::services(
        n,
        workload::vocabulary(n),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let compiled = caio_rules::compile(&workload::policies(p)).unwrap_or_else(|e| panic!("{e:?}"));
    let router = caio_gateway::Router::new(std::sync::Arc::new(registry), compiled);
    let (req, who) = (workload::request(), workload::principal());
    let mut ok = 0;
    let start = std::time::Instant::now();
    for _ in 0..iters {
        ok += usize::from(router.route(&req, &who).is_ok());
    }
    println!(
        "{ok}/{iters} routed, {:?} per route",
        start.elapsed() / iters as u32
    );
    // Where the time goes: the pieces of a decision priced one by one.
    if std::env::var_os("CAIO_PROFILE_ROUTE_ONLY").is_some() {
        return;
    }
    if std::env::var_os("CAIO_PROFILE_DUMP_CORE").is_some() {
        if let Ok(d) = router.route(&req, &who) {
            println!(
                "{}",
                caio_contracts::canonical::to_string(&d.core()).unwrap_or_default()
            );
        }
        return;
    }
    if std::env::var_os("CAIO_PROFILE_SEAL_ONLY").is_some() {
        if let Ok(d) = router.route(&req, &who) {
            let start = std::time::Instant::now();
            let mut n = 0;
            for _ in 0..iters * 10 {
                n += caio_trace::decision_id(&d).map(|s| s.len()).unwrap_or(0);
            }
            println!(
                "decision id {:?} ({n})",
                start.elapsed() / (iters as u32 * 10)
            );
        }
        return;
    }
    if let Ok(d) = router.route(&req, &who) {
        let time = |label: &str, f: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            let mut n = 0;
            for _ in 0..iters {
                n += usize::from(f());
            }
            println!("  {label:<28} {:?} ({n})", start.elapsed() / iters as u32);
        };
        let core_bytes = caio_contracts::canonical::to_vec(&d.core())
            .map(|v| v.len())
            .unwrap_or(0);
        println!(
            "  core streams: {}, request streams: {}",
            caio_contracts::canonical::streams(&d.core()),
            caio_contracts::canonical::streams(&d.request)
        );
        println!(
            "  core: {core_bytes} bytes canonical, {} rule outcomes, {} ranked, {} rejected",
            d.proof.rules.outcomes.len(),
            d.ranking.len(),
            d.rejected.len()
        );
        time("decision id (core hash)", &|| {
            caio_trace::decision_id(&d).is_ok()
        });
        time("core canonical to_vec", &|| {
            caio_contracts::canonical::to_vec(&d.core()).is_ok()
        });
        time("core serde_json to_vec", &|| {
            serde_json::to_vec(&d.core()).is_ok()
        });
        let bytes = serde_json::to_vec(&d.core()).unwrap_or_default();
        time("sha256 of core bytes", &|| {
            !caio_contracts::canonical::digest_bytes(&bytes).is_empty()
        });
        time("request digest", &|| {
            caio_contracts::canonical::digest(&d.request).is_ok()
        });
        time("pii scan", &|| caio_security::scan(&req.payload).is_empty());
        time("serialize decision (json)", &|| {
            serde_json::to_vec(&d).is_ok()
        });
        // What the server answers and records per decision: every rejection is listed.
        println!(
            "  decision JSON: {} bytes, {} rejected",
            serde_json::to_vec(&d).map(|b| b.len()).unwrap_or(0),
            d.rejected.len()
        );
    }
}
