//! CPU features from `/proc/cpuinfo` and the NUMA topology from
//! `/sys/devices/system/node`.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::HardwareError;

/// CPU facts that decide SRTP and forwarding throughput.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuProfile {
    /// Model name of the first processor.
    pub model: String,
    /// Logical CPUs the kernel reports.
    pub logical_cpus: usize,
    /// Physical cores: distinct (`physical id`, `core id`) pairs, or the
    /// logical count where cpuinfo does not describe the topology.
    pub cores: usize,
    /// AES-NI: AES-CM and AES-GCM in hardware.
    pub aes_ni: bool,
    /// Carry-less multiply: GHASH for AES-GCM.
    pub pclmulqdq: bool,
    /// Vector AES (AVX-512/AVX2 VAES): several AES blocks per instruction.
    pub vaes: bool,
    /// SHA extensions: HMAC-SHA1 for the AES-CM SRTP profiles.
    pub sha_ni: bool,
    /// AVX2: the wide AES-GCM code paths of the crypto libraries.
    pub avx2: bool,
}

impl CpuProfile {
    /// Reads `/proc/cpuinfo` of the running host.
    pub fn detect() -> Result<Self, HardwareError> {
        Self::detect_at(Path::new("/proc/cpuinfo"))
    }

    pub(crate) fn detect_at(path: &Path) -> Result<Self, HardwareError> {
        let bytes = std::fs::read(path).map_err(|source| HardwareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_cpuinfo(&String::from_utf8_lossy(&bytes)))
    }

    /// Parses the text of `/proc/cpuinfo` (x86 layout; other layouts give
    /// `false` for the x86 feature flags).
    pub fn from_cpuinfo(text: &str) -> Self {
        let mut profile = Self::default();
        let mut flags: Vec<&str> = Vec::new();
        // (physical id, core id) of each processor block seen so far.
        let mut topology: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "processor" => {
                    topology.push((None, None));
                    profile.logical_cpus += 1;
                }
                "model name" if profile.model.is_empty() => profile.model = value.to_owned(),
                "flags" if flags.is_empty() => flags = value.split_whitespace().collect(),
                "physical id" => {
                    if let Some(block) = topology.last_mut() {
                        block.0 = Some(value);
                    }
                }
                "core id" => {
                    if let Some(block) = topology.last_mut() {
                        block.1 = Some(value);
                    }
                }
                _ => {}
            }
        }
        let cores: HashSet<(&str, &str)> = topology
            .into_iter()
            .filter_map(|(physical, core)| Some((physical?, core?)))
            .collect();
        profile.cores = if cores.is_empty() {
            profile.logical_cpus
        } else {
            cores.len()
        };
        let has = |flag: &str| flags.contains(&flag);
        profile.aes_ni = has("aes");
        profile.pclmulqdq = has("pclmulqdq");
        profile.vaes = has("vaes");
        profile.sha_ni = has("sha_ni");
        profile.avx2 = has("avx2");
        profile
    }

    /// One line per missing acceleration that costs SRTP throughput.
    pub fn advice(&self) -> Vec<&'static str> {
        let mut advice = Vec::new();
        if !self.aes_ni {
            advice.push(
                "no AES-NI: SRTP runs in software, expect several times fewer consults per core",
            );
        }
        if self.aes_ni && !self.pclmulqdq {
            advice.push("no PCLMULQDQ: AES-GCM authentication runs in software; prefer AES_CM_128_HMAC_SHA1_80");
        }
        if !self.sha_ni {
            advice.push("no SHA-NI: HMAC-SHA1 (AES-CM profiles) is slower than AES-GCM here; prefer AEAD_AES_128_GCM");
        }
        advice
    }
}

/// One NUMA node and the CPUs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    /// Node number (`nodeN`).
    pub id: u32,
    /// CPU numbers, ascending; empty for a memory-only node.
    pub cpus: Vec<u32>,
}

/// The most CPUs a cpulist may name; bounds the allocation for odd input.
const MAX_CPUS: usize = 1 << 16;

/// Parses a kernel cpulist such as `0-3,8-11` (the format of
/// `/sys/devices/system/node/nodeN/cpulist`). An empty list is valid (a
/// memory-only node); anything malformed gives `None`.
pub fn parse_cpulist(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let cpu = part.trim().parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || cpus.len() + (last - first) as usize >= MAX_CPUS {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Formats CPU numbers as a kernel cpulist (`0-3,8`), the form
/// `smp_affinity_list` and `taskset -c` accept.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// Reads the NUMA nodes below `root` (`/sys/devices/system/node`). A host
/// without that directory (NUMA compiled out) has no nodes; entries that do
/// not parse are skipped.
pub(crate) fn read_numa_nodes(root: &Path) -> Vec<NumaNode> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut nodes: Vec<NumaNode> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = name.to_str()?.strip_prefix("node")?.parse::<u32>().ok()?;
            let text = std::fs::read(entry.path().join("cpulist")).ok()?;
            let cpus = parse_cpulist(&String::from_utf8_lossy(&text))?;
            Some(NumaNode { id, cpus })
        })
        .collect();
    nodes.sort_by_key(|node| node.id);
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nflags\t\t: fpu sse2 pclmulqdq aes avx2 sha_ni vaes\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\nflags\t\t: fpu sse2 pclmulqdq aes avx2 sha_ni vaes\n";

    #[test]
    fn parses_cpuinfo_flags_and_counts_processors() {
        let p = CpuProfile::from_cpuinfo(CPUINFO);
        assert_eq!(p.logical_cpus, 2);
        assert_eq!(
            p.cores, 2,
            "no topology lines: cores fall back to logical CPUs"
        );
        assert_eq!(p.model, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz");
        assert!(p.aes_ni && p.pclmulqdq && p.vaes && p.sha_ni && p.avx2);
        assert!(p.advice().is_empty());
    }

    #[test]
    fn counts_cores_from_topology_lines() {
        // Two hyperthreads on each of two cores of one package.
        let text = (0..4)
            .map(|cpu| {
                format!(
                    "processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {}\nflags\t\t: aes\n\n",
                    cpu % 2
                )
            })
            .collect::<String>();
        let p = CpuProfile::from_cpuinfo(&text);
        assert_eq!((p.logical_cpus, p.cores), (4, 2));
    }

    #[test]
    fn missing_aes_ni_is_advised() {
        let p = CpuProfile::from_cpuinfo("processor : 0\nflags : fpu sse2\n");
        assert!(!p.aes_ni);
        assert!(p.advice().iter().any(|a| a.contains("AES-NI")));
    }

    #[test]
    fn garbage_gives_an_empty_profile() {
        assert_eq!(
            CpuProfile::from_cpuinfo("\u{0}\n::\nflags"),
            CpuProfile::default()
        );
    }

    #[test]
    fn detects_this_host() {
        let p = CpuProfile::detect().expect("/proc/cpuinfo is readable on Linux");
        assert!(p.logical_cpus >= 1);
        assert!(p.cores >= 1 && p.cores <= p.logical_cpus);
    }

    #[test]
    fn cpulists_parse_and_format() {
        assert_eq!(
            parse_cpulist("0-3,8-9,12\n"),
            Some(vec![0, 1, 2, 3, 8, 9, 12])
        );
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("a-b"), None);
        assert_eq!(
            parse_cpulist("0-4294967295"),
            None,
            "bounded, no huge allocation"
        );
        assert_eq!(format_cpulist(&[12, 0, 1, 2, 3, 9, 8]), "0-3,8-9,12");
        assert_eq!(format_cpulist(&[]), "");
    }
}
