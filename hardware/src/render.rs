//! The host report as a table for people.

use std::fmt::Write;

use crate::cpu::format_cpulist;
use crate::ethtool::Offload;
use crate::report::{HostReport, InterfaceReport};

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

fn offload_cell(offload: Option<Offload>) -> String {
    match offload {
        Some(Offload { on: true, .. }) => "on".into(),
        Some(Offload { on: false, .. }) => "off".into(),
        None => "-".into(),
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn state_cell(interface: &InterfaceReport) -> String {
    match (interface.admin_up, interface.operstate.as_deref()) {
        (Some(false), _) => "down".into(),
        (_, Some(state)) if !state.is_empty() => state.into(),
        _ => "-".into(),
    }
}

fn attached_cell(interface: &InterfaceReport) -> String {
    interface.attached_xdp.as_ref().map_or_else(
        || "-".to_owned(),
        |a| format!("{} ({})", a.name.as_deref().unwrap_or("unnamed"), a.mode),
    )
}

/// Lays rows out in columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders the report as text: host, interface table, why each XDP mode,
/// findings with their fixes, tuning advice, and the verdict.
pub fn render_text(report: &HostReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "switchboard hardware report");
    let _ = writeln!(
        out,
        "kernel {}, page size {}",
        report.kernel.as_deref().unwrap_or("unknown"),
        or_dash(report.page_size)
    );
    let cpu = &report.cpu;
    let _ = writeln!(
        out,
        "CPU    {}: {} logical CPUs, {} cores; AES-NI {}, PCLMULQDQ {}, VAES {}, SHA-NI {}, AVX2 {}",
        if cpu.model.is_empty() { "unknown model" } else { &cpu.model },
        cpu.logical_cpus,
        cpu.cores,
        yes_no(cpu.aes_ni),
        yes_no(cpu.pclmulqdq),
        yes_no(cpu.vaes),
        yes_no(cpu.sha_ni),
        yes_no(cpu.avx2)
    );
    let numa = if report.numa_nodes.is_empty() {
        "not reported".to_owned()
    } else {
        report
            .numa_nodes
            .iter()
            .map(|n| format!("node{} CPUs {}", n.id, format_cpulist(&n.cpus)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let _ = writeln!(out, "NUMA   {numa}");
    out.push('\n');

    if report.interfaces.is_empty() {
        out.push_str("no interfaces to report\n");
    } else {
        let mut rows = vec![[
            "INTERFACE",
            "DRIVER",
            "STATE",
            "SPEED",
            "MTU",
            "RX/TX Q",
            "NUMA",
            "XDP",
            "XDP MTU",
            "AF_XDP ZC",
            "LRO",
            "GRO-HW",
            "RXVLAN",
            "ATTACHED",
        ]
        .map(String::from)
        .to_vec()];
        for i in &report.interfaces {
            rows.push(vec![
                i.name.clone(),
                or_dash(i.driver.as_deref()),
                state_cell(i),
                i.speed_mbps
                    .map_or_else(|| "unknown".to_owned(), |s| format!("{s}Mb/s")),
                or_dash(i.mtu),
                format!("{}/{}", i.rx_queues, i.tx_queues),
                or_dash(i.numa_node),
                i.xdp_mode.to_string(),
                or_dash(i.xdp_mtu_limit),
                i.af_xdp_zero_copy.to_string(),
                offload_cell(i.offloads.lro),
                offload_cell(i.offloads.gro_hw),
                offload_cell(i.offloads.rx_vlan),
                attached_cell(i),
            ]);
        }
        out.push_str(&table(&rows));
        out.push('\n');
        for i in &report.interfaces {
            let _ = writeln!(out, "{}: XDP {}: {}", i.name, i.xdp_mode, i.xdp_reason);
        }
    }

    out.push('\n');
    if report.findings.is_empty() {
        out.push_str("FINDINGS: none\n");
    } else {
        out.push_str("FINDINGS\n");
        for f in &report.findings {
            let _ = writeln!(
                out,
                "{:<5}  {}: {}",
                f.severity.to_string(),
                f.interface.as_deref().unwrap_or("host"),
                f.problem
            );
            let _ = writeln!(out, "       fix: {}", f.fix);
        }
    }

    let tuned: Vec<&InterfaceReport> = report.interfaces.iter().filter(|i| !i.loopback).collect();
    if !tuned.is_empty() {
        out.push_str("\nTUNING\n");
        for i in tuned {
            let _ = writeln!(out, "{} ({}):", i.name, i.profile.description);
            for line in &i.tuning {
                let _ = writeln!(out, "  - {line}");
            }
        }
    }

    out.push('\n');
    let modes: Vec<String> = report
        .interfaces
        .iter()
        .filter(|i| report.requested.is_some() || !i.loopback)
        .map(|i| format!("{} {}", i.name, i.xdp_mode))
        .chain(report.missing.iter().map(|m| format!("{m} missing")))
        .collect();
    let _ = writeln!(
        out,
        "XDP fast path: {}{}",
        if report.xdp_can_run() {
            "can run"
        } else {
            "cannot run"
        },
        if modes.is_empty() {
            String::new()
        } else {
            format!(" ({})", modes.join(", "))
        }
    );
    out
}
