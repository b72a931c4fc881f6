//! File descriptors for `limits.max_connections`: every client connection holds one, and the
//! server also needs some for the trace and audit logs, sealed segments being read, the listen
//! socket and outbound calls. A soft limit below what the setting needs (1024 is a common default)
//! would make `accept` fail with EMFILE under load, and appends to the logs with it.

use crate::checks::Check;

/// Descriptors kept for everything but client connections.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The process's open-file limits (`ulimit -Sn`, `ulimit -Hn`); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The soft limit, which the process may raise up to the hard one.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// What the server does about its limits for `max_connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// Descriptors the setting needs (connections plus [`RESERVED_DESCRIPTORS`]).
    pub needed: u64,
    /// The soft limit to set, when the current one is below `needed`: `needed`, or the hard
    /// limit when that is lower.
    pub raise_soft_to: Option<u64>,
    /// Set when even the hard limit is below `needed`: what to change.
    pub problem: Option<String>,
}

/// The plan for `max_connections` under `limits`.
pub fn descriptor_plan(max_connections: usize, limits: FileLimits) -> DescriptorPlan {
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_DESCRIPTORS);
    let fits = |limit: Option<u64>| limit.is_none_or(|l| l >= needed);
    if fits(limits.soft) {
        return DescriptorPlan {
            needed,
            raise_soft_to: None,
            problem: None,
        };
    }
    match limits.hard {
        Some(hard) if hard < needed => DescriptorPlan {
            needed,
            raise_soft_to: (limits.soft < Some(hard)).then_some(hard),
            problem: Some(format!(
                "limits.max_connections is {max_connections}, which needs {needed} open files \
                 ({RESERVED_DESCRIPTORS} kept for the logs and outbound calls), but the hard limit \
                 is {hard}: at most {} connections can be served; raise the hard limit \
                 (`ulimit -Hn`, systemd `LimitNOFILE=`, docker `--ulimit nofile=`) or lower \
                 CAIO_MAX_CONNECTIONS",
                hard.saturating_sub(RESERVED_DESCRIPTORS)
            )),
        },
        _ => DescriptorPlan {
            needed,
            raise_soft_to: Some(needed),
            problem: None,
        },
    }
}

/// This process's open-file limits.
pub fn file_limits() -> FileLimits {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    FileLimits {
        soft: r.current,
        hard: r.maximum,
    }
}

/// Raises this process's soft open-file limit as `plan` says; returns the soft limit now in force.
pub fn apply(plan: &DescriptorPlan) -> Result<Option<u64>, String> {
    let limits = file_limits();
    if let Some(soft) = plan.raise_soft_to {
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(soft),
                maximum: limits.hard,
            },
        )
        .map_err(|e| format!("raising the open-file limit to {soft}: {e}"))?;
    }
    Ok(file_limits().soft)
}

/// The check `caio doctor --check-connections` prints for this process's limits.
pub fn check(max_connections: usize) -> Check {
    let limits = file_limits();
    let plan = descriptor_plan(max_connections, limits);
    let show = |l: Option<u64>| l.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    match (&plan.problem, plan.raise_soft_to) {
        (Some(problem), _) => Check::fail("limits.open_files", problem.clone()),
        (None, Some(soft)) => Check::pass(
            "limits.open_files",
            format!(
                "needs {}; soft limit {} (the server raises it to {soft} at start), hard {}",
                plan.needed,
                show(limits.soft),
                show(limits.hard)
            ),
        ),
        (None, None) => Check::pass(
            "limits.open_files",
            format!(
                "needs {}; soft limit {}, hard {}",
                plan.needed,
                show(limits.soft),
                show(limits.hard)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max: usize, soft: Option<u64>, hard: Option<u64>) -> DescriptorPlan {
        descriptor_plan(max, FileLimits { soft, hard })
    }

    #[test]
    fn a_soft_limit_that_suffices_is_left_alone() {
        for (soft, hard) in [
            (Some(10_256), Some(10_256)),
            (Some(65_536), Some(1 << 20)),
            (None, None),
        ] {
            let p = plan(10_000, soft, hard);
            assert_eq!(p.needed, 10_256);
            assert_eq!(
                (p.raise_soft_to, p.problem),
                (None, None),
                "{soft:?} {hard:?}"
            );
        }
    }

    #[test]
    fn a_low_soft_limit_is_raised_to_what_is_needed() {
        assert_eq!(
            plan(10_000, Some(1024), Some(524_288)).raise_soft_to,
            Some(10_256)
        );
        assert_eq!(plan(10_000, Some(1024), None).raise_soft_to, Some(10_256));
        assert_eq!(plan(10_000, Some(1024), Some(10_256)).problem, None);
    }

    #[test]
    fn a_hard_limit_below_the_need_is_a_problem_naming_the_fix() {
        let p = plan(10_000, Some(1024), Some(4096));
        // Raise as far as allowed, and say how many connections that serves.
        assert_eq!(p.raise_soft_to, Some(4096));
        let problem = p.problem.unwrap_or_default();
        for needle in [
            "10000",
            "10256",
            "4096",
            "at most 3840 connections",
            "LimitNOFILE",
        ] {
            assert!(problem.contains(needle), "{needle}: {problem}");
        }
        // Already at the hard limit: nothing to raise, still the problem.
        let p = plan(10_000, Some(4096), Some(4096));
        assert_eq!(p.raise_soft_to, None);
        assert!(p.problem.is_some());
        // A hard limit below the reserve itself.
        let p = plan(1, Some(64), Some(100));
        assert!(
            p.problem
                .unwrap_or_default()
                .contains("at most 0 connections")
        );
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let p = plan(usize::MAX, Some(1024), Some(4096));
        assert_eq!(p.needed, u64::MAX);
        assert!(p.problem.is_some());
    }

    #[test]
    fn this_process_reports_its_limits_and_a_modest_setting_passes() {
        let limits = file_limits();
        if let (Some(soft), Some(hard)) = (limits.soft, limits.hard) {
            assert!(soft <= hard);
        }
        // One connection needs 257 files: every test runner allows that much at its hard limit.
        let c = check(1);
        assert!(c.passed(), "{}", c.detail);
        assert!(c.detail.contains("needs 257"), "{}", c.detail);
    }
}
