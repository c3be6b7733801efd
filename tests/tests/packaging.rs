//! The library crates are ready to publish: the real `cargo package` packs
//! `signaling-protocol` and `signaling-client` (the second depending on the
//! first by version, as crates.io will have it), builds each from its
//! package alone, and finds the metadata crates.io shows complete.

use std::process::Command;

#[test]
fn the_library_crates_package_and_build_from_their_packages() {
    let root = signaling_e2e::workspace_root();
    // Its own target folder, kept between runs: the packages' build.
    let target = root.join("target/package-check");
    let out = Command::new(env!("CARGO"))
        .args([
            "package",
            "-p",
            "signaling-protocol",
            "-p",
            "signaling-client",
            "--allow-dirty",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo package failed:\n{log}");
    for name in ["signaling-protocol", "signaling-client"] {
        assert!(
            log.contains(&format!("Verifying {name} v")),
            "{name} not built from its package:\n{log}"
        );
        let crate_file = target.join(format!("package/{name}-0.1.0.crate"));
        assert!(crate_file.exists(), "{} missing", crate_file.display());
    }
    assert!(
        !log.contains("warning: manifest has no"),
        "metadata missing:\n{log}"
    );
    // Each package carries its README (crates.io shows it).
    let listed = Command::new(env!("CARGO"))
        .args([
            "package",
            "--list",
            "--allow-dirty",
            "-p",
            "signaling-client",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(files.lines().any(|l| l == "README.md"), "{files}");
}
