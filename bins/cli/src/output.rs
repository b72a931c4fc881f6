//! Human-readable tables for decisions and rejections.

use std::io::{self, Write};

use caio_contracts::decision::{Decision, Rejection};
use caio_gateway::NoRoute;

fn short(digest: &str) -> &str {
    let end = digest.len().min(7 + 12);
    &digest[..end]
}

/// Prints a decision: the choice, the ranking table, the rejections and the composed guarantees.
pub fn decision(out: &mut impl Write, d: &Decision) -> io::Result<()> {
    writeln!(out, "Decision {}", d.decision_id)?;
    writeln!(
        out,
        "  chosen:   {}  (score {:.4}, margin {:.4})",
        d.service_id, d.score, d.control_signal.margin
    )?;
    writeln!(
        out,
        "  registry: {}…  policies: {}…  services: {}  feasible: {}  rejected: {}",
        short(&d.registry_version),
        short(&d.policy_version),
        d.proof.matching.registry_services,
        d.ranking.len(),
        d.rejected.len()
    )?;
    let s = &d.proof.security;
    if s.sensitive {
        let kinds: Vec<&str> = s.pii.iter().map(|p| p.kind.as_str()).collect();
        writeln!(
            out,
            "  data:     sensitive ({}{}) — payload redacted in the record",
            if s.declared_sensitive {
                "declared"
            } else {
                "not declared"
            },
            if kinds.is_empty() {
                String::new()
            } else {
                format!("; PII found: {}", kinds.join(", "))
            }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<4} {:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "RANK", "SERVICE", "SCORE", "QUALITY", "RELIAB", "COST", "RISK", "LATENCY", "EST.COST"
    )?;
    for (i, r) in d.ranking.iter().enumerate() {
        let t = &r.terms;
        writeln!(
            out,
            "{:<4} {:<24} {:>8.4} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10.6}",
            i + 1,
            r.service_id,
            r.score,
            t.quality,
            t.reliability,
            t.cost,
            t.risk,
            t.latency,
            t.estimated_cost
        )?;
        if d.proof.optimize.fields_used {
            writeln!(
                out,
                "     {:<24} I {:.3}  A {:.3}  RL {:.3}  W {:.3}  κ {:.3}",
                "", t.intent, t.attention, t.rl, t.resonance, t.kappa
            )?;
        }
    }
    rejections(out, d.rejected.iter())?;
    let g = &d.guarantees;
    writeln!(out)?;
    let mut parts = Vec::new();
    if let Some(a) = g.accuracy {
        parts.push(format!("accuracy ≥ {a}"));
    }
    if let Some(l) = g.latency_ms {
        parts.push(format!("latency ≤ {l} ms"));
    }
    parts.push(format!("est. cost {:.6}", g.cost));
    parts.push(if g.determinism {
        "deterministic".into()
    } else {
        "non-deterministic".into()
    });
    parts.push(format!(
        "{}{}",
        g.data_locality.as_str(),
        if g.encryption { ", encrypted" } else { "" }
    ));
    writeln!(out, "Guarantees: {}", parts.join(" · "))?;
    if d.proof.optimize.fields_used {
        let u: Vec<String> = d
            .control_signal
            .u
            .iter()
            .map(|v| format!("{v:+.4}"))
            .collect();
        writeln!(
            out,
            "Control signal u = [{}] (|u| ≤ {})",
            u.join(", "),
            d.control_signal.u_max
        )?;
    }
    Ok(())
}

fn rejections<'a>(
    out: &mut impl Write,
    rejected: impl Iterator<Item = &'a Rejection>,
) -> io::Result<()> {
    let mut rejected = rejected.peekable();
    if rejected.peek().is_none() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:<9} {:<22} DETAIL",
        "REJECTED", "STEP", "REASON"
    )?;
    for r in rejected {
        writeln!(
            out,
            "{:<24} {:<9} {:<22} {}",
            r.service_id,
            r.step.as_str(),
            r.reason,
            r.detail
        )?;
    }
    Ok(())
}

/// Prints why no service qualified.
pub fn no_route(out: &mut impl Write, n: &NoRoute) -> io::Result<()> {
    writeln!(out, "NO_MATCHING_SERVICE: no service satisfies the request")?;
    writeln!(
        out,
        "  registry: {}…  policies: {}…  services: {}",
        short(&n.registry_version),
        short(&n.policy_version),
        n.rejected.len()
    )?;
    rejections(out, n.rejected.iter())
}
