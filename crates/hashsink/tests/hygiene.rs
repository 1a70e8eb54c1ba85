//! Rules every crate of the workspace keeps, checked on the sources.

mod common;

#[test]
fn every_crate_forbids_unsafe_code() {
    let crates = common::repo_root().join("crates");
    let mut roots = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        for root in ["lib.rs", "main.rs"] {
            let path = src.join(root);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            roots += 1;
            assert!(
                text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
                "{} does not forbid unsafe code",
                path.display()
            );
        }
    }
    assert!(
        roots >= 14,
        "only {roots} crate roots found under {}",
        crates.display()
    );
}
