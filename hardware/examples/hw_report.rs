//! Prints what this host offers switchboard's media paths.
//!
//! `hw_report [--json | --snapshot] [INTERFACE...]`: the text report by
//! default, the report as JSON with `--json`, or the raw readings as JSON
//! with `--snapshot` (to analyse on another machine).

use hardware::{render_text, HostReport, HostSnapshot};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut format = "text";
    let mut interfaces = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => format = "json",
            "--snapshot" => format = "snapshot",
            _ => interfaces.push(arg),
        }
    }
    let requested = (!interfaces.is_empty()).then_some(interfaces.as_slice());
    match format {
        "snapshot" => println!(
            "{}",
            serde_json::to_string_pretty(&HostSnapshot::read(requested)?)?
        ),
        "json" => println!("{}", HostReport::detect(requested)?.to_json()?),
        _ => print!("{}", render_text(&HostReport::detect(requested)?)),
    }
    Ok(())
}
