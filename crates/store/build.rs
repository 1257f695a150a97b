//! Rebuilds this crate when a migration is added or changed: `sqlx::migrate!`
//! embeds `migrations/` at compile time but does not tell cargo to watch it,
//! so a new migration file alone (no `.rs` change) left the previous build's
//! migrations in the binary.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
