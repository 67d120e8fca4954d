//! Golden-file tests: each `ui/<case>.toml` is loaded; a valid manifest is
//! compared with `ui/<case>.out` (its parsed form), an invalid one with
//! `ui/<case>.err` (the exact message). Adding a case means adding files.
//! `UPDATE_EXPECT=1 cargo test -p bantam-manifest` rewrites the expectations.

#[test]
fn ui() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<_> = std::fs::read_dir("tests/ui")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let (actual, expected_path) = match bantam_manifest::load(case) {
            Ok(manifest) => {
                let mut out = String::new();
                for warning in &manifest.warnings {
                    out.push_str(&format!("warning: {warning}\n"));
                }
                out.push_str(&format!("{:#?}\n", manifest.application));
                for trigger in &manifest.http_triggers {
                    out.push_str(&format!("{trigger:?}\n"));
                }
                for (name, variable) in &manifest.variables {
                    out.push_str(&format!("variable {name}: {variable:?}\n"));
                }
                for component in manifest.components.values() {
                    out.push_str(&format!("{component:#?}\n"));
                }
                (out, case.with_extension("out"))
            }
            Err(error) => (format!("{error}\n"), case.with_extension("err")),
        };
        let other = if expected_path.extension().unwrap() == "out" { "err" } else { "out" };
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            let _ = std::fs::remove_file(case.with_extension(other));
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures
                .push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", case.display())),
            Err(_) => failures.push(format!(
                "{}: no {} (expected {}?); actual:\n{actual}",
                case.display(),
                expected_path.display(),
                case.with_extension(other).display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
