//! Choosing a host for a new pod.

use crate::{RuntimeKind, TierLimits};

/// What the scheduler knows about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapacity {
    pub id: String,
    /// Whether the host is accepting new pods (alive and not draining).
    pub schedulable: bool,
    pub runtimes: Vec<RuntimeKind>,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Sum of the vCPUs of the live pods already placed there.
    pub vcpus_used: u32,
    /// Sum of the memory limits of the live pods already placed there.
    pub memory_used: u64,
    /// What its agent says it is (`region=eu`, `gpu=nvidia`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Why no host could take a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no host is available to run pods")]
    NoHosts,
    #[error("no host offers the {0} runtime")]
    NoRuntime(RuntimeKind),
    #[error("no host has the labels {0}")]
    NoLabels(String),
    #[error("no host has room for {vcpus} vCPU and {memory_gib} GiB of memory")]
    NoCapacity { vcpus: u32, memory_gib: u64 },
}

/// How far the sum of pods' CPU limits may exceed a host's CPUs: dev pods
/// idle most of the time, and a limit is a ceiling, not a reservation.
pub const CPU_OVERCOMMIT: u32 = 16;

/// How far the sum of pods' memory limits may exceed a host's memory.
/// Smaller than for CPU: memory that is used cannot be taken back.
pub const MEMORY_OVERCOMMIT: u64 = 4;

/// Picks the schedulable host that offers `runtime` and has room for `limits`,
/// preferring the one with the most free memory (ties: lowest id, so placement
/// is deterministic).
pub fn place<'a>(
    hosts: &'a [HostCapacity],
    runtime: RuntimeKind,
    limits: &TierLimits,
) -> Result<&'a HostCapacity, PlacementError> {
    place_on(hosts, runtime, limits, &std::collections::BTreeMap::new())
}

/// [`place`] among the hosts that carry every label in `labels`.
pub fn place_on<'a>(
    hosts: &'a [HostCapacity],
    runtime: RuntimeKind,
    limits: &TierLimits,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<&'a HostCapacity, PlacementError> {
    let live: Vec<_> = hosts.iter().filter(|h| h.schedulable).collect();
    if live.is_empty() {
        return Err(PlacementError::NoHosts);
    }
    let live: Vec<_> = live.into_iter().filter(|h| labels.iter().all(|(k, v)| h.labels.get(k) == Some(v))).collect();
    if live.is_empty() {
        let wanted = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        return Err(PlacementError::NoLabels(wanted));
    }
    let with_runtime: Vec<_> = live.into_iter().filter(|h| h.runtimes.contains(&runtime)).collect();
    if with_runtime.is_empty() {
        return Err(PlacementError::NoRuntime(runtime));
    }
    with_runtime
        .into_iter()
        .filter(|h| {
            h.vcpus_used + limits.vcpus <= h.vcpus * CPU_OVERCOMMIT
                && h.memory_used + limits.memory_bytes <= h.memory_bytes * MEMORY_OVERCOMMIT
        })
        .max_by(|a, b| {
            let free = |h: &HostCapacity| (h.memory_bytes * MEMORY_OVERCOMMIT).saturating_sub(h.memory_used);
            free(a).cmp(&free(b)).then_with(|| b.id.cmp(&a.id))
        })
        .ok_or(PlacementError::NoCapacity {
            vcpus: limits.vcpus,
            memory_gib: limits.memory_bytes >> 30,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tier;

    fn host(id: &str, mem_gib: u64, used_gib: u64) -> HostCapacity {
        HostCapacity {
            labels: Default::default(),
            id: id.into(),
            schedulable: true,
            runtimes: vec![RuntimeKind::Gvisor],
            vcpus: 2,
            memory_bytes: mem_gib << 30,
            vcpus_used: 0,
            memory_used: used_gib << 30,
        }
    }

    #[test]
    fn prefers_most_free_memory_then_lowest_id() {
        let small = Tier::DevSmall.limits();
        let hosts = [host("b", 24, 0), host("a", 24, 0), host("c", 24, 10)];
        assert_eq!(place(&hosts, RuntimeKind::Gvisor, &small).unwrap().id, "a");
        let hosts = [host("a", 24, 20), host("b", 24, 4)];
        assert_eq!(place(&hosts, RuntimeKind::Gvisor, &small).unwrap().id, "b");
    }

    #[test]
    fn refuses_with_the_reason() {
        let small = Tier::DevSmall.limits();
        assert_eq!(place(&[], RuntimeKind::Gvisor, &small), Err(PlacementError::NoHosts));
        let mut h = host("a", 24, 0);
        h.schedulable = false;
        assert_eq!(place(&[h], RuntimeKind::Gvisor, &small), Err(PlacementError::NoHosts));
        assert_eq!(
            place(&[host("a", 24, 0)], RuntimeKind::Youki, &small),
            Err(PlacementError::NoRuntime(RuntimeKind::Youki))
        );
        assert!(matches!(
            place(&[host("a", 24, 95)], RuntimeKind::Gvisor, &small),
            Err(PlacementError::NoCapacity { .. })
        ));
        // limits may add up to 4x the memory and 16x the CPUs, not more
        assert!(place(&[host("a", 24, 94)], RuntimeKind::Gvisor, &small).is_ok());
        let mut busy = host("a", 24, 0);
        busy.vcpus_used = 31;
        assert!(place(std::slice::from_ref(&busy), RuntimeKind::Gvisor, &small).is_ok());
        busy.vcpus_used = 32;
        assert!(place(&[busy], RuntimeKind::Gvisor, &small).is_err());
    }

    #[test]
    fn labels_narrow_the_hosts_and_say_which_were_wanted() {
        let small = Tier::DevSmall.limits();
        let mut eu = host("eu-1", 24, 0);
        eu.labels.insert("region".into(), "eu".into());
        let us = host("us-1", 32, 0);
        let hosts = [eu, us];
        let want = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into_iter().collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(place(&hosts, RuntimeKind::Gvisor, &small).unwrap().id, "us-1", "without labels: the most free memory");
        assert_eq!(place_on(&hosts, RuntimeKind::Gvisor, &small, &want("region", "eu")).unwrap().id, "eu-1");
        assert_eq!(
            place_on(&hosts, RuntimeKind::Gvisor, &small, &want("region", "ap")),
            Err(PlacementError::NoLabels("region=ap".into()))
        );
    }
}
