//! Records the git revision for `--version`, logs and metrics. `GIT_REVISION` (set by
//! image builds without a `.git` directory) wins over asking git.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_REVISION");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs");
    let sha = std::env::var("GIT_REVISION")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
        });
    println!(
        "cargo:rustc-env=GIT_REVISION={}",
        sha.unwrap_or_else(|| "unknown".to_owned())
    );
}
