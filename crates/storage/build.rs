//! Rebuilds the crate when a migration is added, changed or removed: `embed_migrations!`
//! reads `migrations/` at compile time, and cargo only watches the crate's Rust sources by
//! default, so a new `.sql` file alone would ship a binary without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
