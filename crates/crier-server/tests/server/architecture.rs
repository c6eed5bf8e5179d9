//! The layer rule, enforced: inside a crate, a module may import only the
//! modules of lower layers (and its own submodules). Modules of one layer
//! never import each other. The tables below are the ones ARCHITECTURE.md
//! shows; a change that needs an import against them needs a rethink, not
//! a new row.

use std::path::{Path, PathBuf};

/// crier-server's layers: module path (as `crate::…` names it), layer.
const SERVER: &[(&str, u8)] = &[
    // 0. foundations: nothing of the crate
    ("config", 0),
    ("clock", 0),
    ("net", 0),
    // 1. vocabulary
    ("wire", 1),
    ("auth", 1),
    ("metrics", 1),
    ("error", 1),
    // 2. the engine seam
    ("broker", 2),
    ("proxy", 2),
    ("webhooks", 2),
    ("redis_broker", 3),
    ("nats_broker", 3),
    ("cluster", 4),
    // 3. shared context
    ("node", 5),
    // 4. services
    ("admission", 6),
    ("control", 6),
    ("session", 7),
    ("api", 7),
    // 5. edges: never import each other
    ("transport", 8),
    ("transport::websocket", 8),
    ("transport::uni", 8),
    ("transport::tcp", 8),
    ("transport::emulation", 8),
    ("watch", 8),
    ("http", 8),
    ("admin", 8),
    // 6. the top
    ("server", 9),
    // wrappers for the fuzz targets and the Autobahn echo (feature `fuzzing`)
    ("fuzzing", 9),
];

/// crier-core's layers.
const CORE: &[(&str, u8)] = &[
    ("clock", 0),
    ("shard", 0),
    ("stats", 0),
    ("options", 0),
    ("event", 0),
    ("engine", 1),
    ("queue", 1),
    ("hooks", 1),
    ("error", 2),
    ("memory", 2),
    ("hub", 3),
];

/// Directories whose module is named otherwise (`#[path]` in lib.rs).
const RENAMED: &[(&str, &str)] = &[("redis", "redis_broker"), ("nats", "nats_broker")];

/// The table entry that owns `module` (longest prefix on `::` bounds).
fn owner<'t>(table: &'t [(&'t str, u8)], module: &str) -> Option<(&'t str, u8)> {
    table
        .iter()
        .filter(|(name, _)| module == *name || module.starts_with(&format!("{name}::")))
        .max_by_key(|(name, _)| name.len())
        .copied()
}

/// The module path of a source file, from its place under `src/`.
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if let Some(first) = parts.first_mut() {
        if let Some((_, to)) = RENAMED.iter().find(|(from, _)| first == from) {
            *first = (*to).to_string();
        }
    }
    parts.join("::")
}

/// The text without comments (so doc links never count as imports).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `a::{b, c::{d}}` into `a::b`, `a::c::d`.
fn expand(path: &str) -> Vec<String> {
    let path = path.trim();
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(&format!("{prefix}{}", i.trim())))
        .collect()
}

/// Every module of the crate that `text` (the file of `module`) names:
/// `crate::…` paths in `use` statements and in code, and `super::…`.
fn imports(module: &str, text: &str) -> Vec<String> {
    let code = code_only(text);
    let mut found = std::collections::BTreeSet::new();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    // `super::x` outside a test module reaches a sibling of this module.
    let tests_at = code.find("mod tests").unwrap_or(code.len());
    let resolve = |path: &str, at: usize| -> Option<String> {
        if let Some(rest) = path.strip_prefix("crate::") {
            return Some(rest.to_string());
        }
        let rest = path.strip_prefix("super::")?;
        if at > tests_at || rest.starts_with("super::") || rest == "*" {
            return None;
        }
        Some(if parent.is_empty() {
            rest.to_string()
        } else {
            format!("{parent}::{rest}")
        })
    };
    // `use` statements, which may group paths in braces over many lines.
    for prefix in ["use crate::", "use super::"] {
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = code[i..].find(';').map_or(code.len(), |e| i + e);
            let path: String = code[i + 4..end].split_whitespace().collect::<Vec<_>>().join(" ");
            let path = path.split(" as ").next().unwrap_or_default().replace(' ', "");
            found.extend(expand(&path).iter().filter_map(|p| resolve(p, i)));
        }
    }
    // Paths written in code: `crate::a::b(...)`, `super::a::f(...)`.
    for prefix in ["crate::", "super::"] {
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `use crate::` handled above, or `super::super::`
            }
            if code[..i].ends_with("use ") {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.extend(resolve(path.trim_end_matches(':'), i));
        }
    }
    // Keep the module part: drop a trailing glob.
    found
        .into_iter()
        .map(|p| p.trim_end_matches("::*").to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// What breaks the layer rule in `files` (path under `src/`, text).
fn violations(table: &[(&str, u8)], files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in files {
        let module = module_of(path);
        if module.is_empty() {
            continue; // lib.rs declares every module
        }
        let Some((from, from_rank)) = owner(table, &module) else {
            out.push(format!(
                "{}: module {module} has no row in the layer table",
                path.display()
            ));
            continue;
        };
        for imported in imports(&module, text) {
            let Some((to, to_rank)) = owner(table, &imported) else {
                // An item of lib.rs itself (`crate::Node`) is fine; a module
                // with no row is not.
                if imported.starts_with(|c: char| c.is_lowercase()) {
                    out.push(format!(
                        "{}: {from} imports {imported}, which has no row",
                        path.display()
                    ));
                }
                continue;
            };
            if to == from || to.starts_with(&format!("{from}::")) {
                continue; // its own module or one of its submodules
            }
            if to_rank >= from_rank {
                out.push(format!(
                    "{}: {from} (layer {from_rank}) imports {imported} (layer {to_rank})",
                    path.display()
                ));
            }
        }
    }
    out
}

fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                out.push((p.strip_prefix(root).expect("under src").to_path_buf(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out
}

#[test]
fn crier_server_imports_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    assert!(files.len() > 30, "found the sources");
    let bad = violations(SERVER, &files);
    assert!(
        bad.is_empty(),
        "imports against the layer table:\n{}",
        bad.join("\n")
    );
}

#[test]
fn crier_core_imports_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crier-core/src");
    let files = sources(&src);
    let bad = violations(CORE, &files);
    assert!(
        bad.is_empty(),
        "imports against the layer table:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_catches_the_back_arrows_the_restructure_removed() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_string());
    let old = [
        file(
            "config/mod.rs",
            "fn f() { crate::transport::tcp::validate(&c)?; }",
        ),
        file(
            "metrics.rs",
            "use crate::node::Node;\nuse crate::server::ServerError;",
        ),
        file("node.rs", "fn f() { crate::api::apply_control(&node, &msg); }"),
        file(
            "cluster/mod.rs",
            "use crate::{broker, session::unsubscribe_push};",
        ),
        file("transport/uni.rs", "use super::websocket::close;"),
        file("net/rfc6455.rs", "use crate::server::WriteDeadline;"),
        file("session.rs", "use crate::api::call;"),
        file("redis/mod.rs", "use crate::nats_broker::X;"),
        file(
            "wire/mod.rs",
            "// crate::node is only named in a comment\nuse crate::config::ChannelOptions;",
        ),
        file("server.rs", "use crate::{http, transport::{tcp, uni}};"),
    ];
    let bad = violations(SERVER, &old);
    let edges: Vec<&str> = [
        "config (layer 0) imports transport::tcp::validate",
        "metrics (layer 1) imports node",
        "metrics (layer 1) imports server",
        "node (layer 5) imports api::apply_control",
        "cluster (layer 4) imports session::unsubscribe_push",
        "transport::uni (layer 8) imports transport::websocket::close",
        "net (layer 0) imports server",
        "session (layer 7) imports api",
        "redis_broker (layer 3) imports nats_broker",
    ]
    .to_vec();
    for edge in &edges {
        assert!(
            bad.iter().any(|b| b.contains(edge)),
            "{edge} not caught in {bad:#?}"
        );
    }
    assert_eq!(bad.len(), edges.len(), "only those: {bad:#?}");
    let unknown = violations(SERVER, &[file("api.rs", "use crate::tcp::validate;")]);
    assert!(
        unknown[0].contains("tcp::validate, which has no row"),
        "{unknown:?}"
    );
}
