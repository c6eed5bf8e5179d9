//! Configuration loading (`crier_server::config`): TOML, YAML and JSON
//! text, and `CRIER_*` environment variables. A configuration that loads
//! is written as JSON and loads back equal (so every value, durations
//! included, survives its own format); validation never panics.
#![no_main]

use std::sync::OnceLock;

use crier_server::config::{Config, Format};
use libfuzzer_sys::fuzz_target;

/// Every `CRIER_*` variable, from the defaults' key tree (as `config::env`
/// builds its own table).
fn variables() -> &'static [String] {
    static VARS: OnceLock<Vec<String>> = OnceLock::new();
    VARS.get_or_init(|| {
        fn walk(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, child) in map {
                        path.push(k.clone());
                        walk(child, path, out);
                        path.pop();
                    }
                }
                _ => out.push(format!("CRIER_{}", path.join("_").to_ascii_uppercase())),
            }
        }
        let mut out = Vec::new();
        let defaults = serde_json::to_value(Config::default()).expect("defaults serialize");
        walk(&defaults, &mut Vec::new(), &mut out);
        out
    })
}

fn round_trip(config: &Config) {
    let json = serde_json::to_string(config).expect("a loaded configuration serializes");
    let (again, _) = Config::parse_str(&json, Format::Json, "again.json").expect("its JSON loads back");
    assert_eq!(
        &again, config,
        "the JSON round trip changed the configuration: {json}"
    );
    let _ = again.validate();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match mode % 4 {
        0 => Format::Toml,
        1 => Format::Yaml,
        2 => Format::Json,
        _ => {
            // One variable per line: a byte picking the name, then the value.
            let vars = variables();
            let env: Vec<(String, String)> = text
                .lines()
                .filter_map(|line| {
                    let mut chars = line.chars();
                    let pick = chars.next()? as usize;
                    Some((vars[pick % vars.len()].clone(), chars.as_str().to_string()))
                })
                .collect();
            if let Ok(loaded) = Config::load_with_env(None, env) {
                round_trip(&loaded.config);
            }
            return;
        }
    };
    if let Ok((config, _warnings)) = Config::parse_str(text, format, "fuzz") {
        round_trip(&config);
    }
});
