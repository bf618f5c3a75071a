//! The crate's layers, checked: a module may use only modules in lower
//! layers. The order, from the bottom:
//!
//! ```text
//! buf, net, auth, limits, tick   values and plumbing with no idea of a connection
//! < metrics, route                counting vocabulary; what a request target names
//! < ws                            RFC 6455 sans I/O
//! < conn                          one connection
//! < bus, events                   what threads say to each other; what the
//!                                 application is told (the hub holds the emitter)
//! < hub                           channels, rooms, users, presence, history
//! < shard, cluster, admin, proxy  the threads that drive the hub and the bus
//! < config                        flags and files into the values above
//! < server                        start, signals, stop
//! ```
//!
//! Modules of one layer do not use each other either. The test reads every
//! `src/**/*.rs` and fails on a `crate::x` (or `hubbub::x`) path that breaks
//! the order, naming the rule, so the structure stays what `lib.rs` says.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    const LAYERS: &[&[&str]] = &[
        &["buf", "net", "auth", "limits", "tick"],
        &["metrics", "route"],
        &["ws"],
        &["conn"],
        &["bus", "events"],
        &["hub"],
        &["shard", "cluster", "admin", "proxy"],
        &["config"],
        &["server"],
    ];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules `source` names through `crate::` paths, with
    /// the line they are on; comments are skipped.
    fn uses(source: &str) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `crate::{a, b::c}`: each item's first segment.
                    let inner = group.split('}').next().unwrap_or("");
                    for item in inner.split(',') {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            found.push((n + 1, name));
                        }
                    }
                } else {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    found.push((n + 1, name));
                }
            }
        }
        found
    }

    #[test]
    fn every_module_uses_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut broken = BTreeSet::new();
        let mut unplaced = BTreeSet::new();
        for file in &files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if matches!(module.as_str(), "lib" | "main" | "layering") {
                continue;
            }
            let Some(own) = layer_of(&module) else {
                unplaced.insert(module);
                continue;
            };
            let source = std::fs::read_to_string(file).unwrap();
            for (line, used) in uses(&source) {
                if used == module {
                    continue;
                }
                let Some(theirs) = layer_of(&used) else {
                    unplaced.insert(used);
                    continue;
                };
                if theirs >= own {
                    let rule = if theirs == own {
                        format!("`{module}` and `{used}` are in one layer and must not use each other")
                    } else {
                        format!("`{module}` is below `{used}` and must not use it")
                    };
                    broken.insert(format!("{}:{line}: {rule}", relative.display()));
                }
            }
        }
        assert!(
            unplaced.is_empty(),
            "modules with no layer in src/layering.rs: {unplaced:?}; place each in LAYERS and in the doc order"
        );
        assert!(
            broken.is_empty(),
            "imports that break the layer order (see src/layering.rs):\n{}",
            broken.into_iter().collect::<Vec<_>>().join("\n")
        );
    }

    #[test]
    fn the_reader_sees_grouped_and_nested_paths_and_skips_comments() {
        let source =
            "use crate::{bus::msg::HubMsg, tick};\n// crate::server in a comment\nlet x = crate::hub::owner::y;\n";
        let names: Vec<String> = uses(source).into_iter().map(|(_, name)| name).collect();
        assert_eq!(names, ["bus", "tick", "hub"]);
    }
}
