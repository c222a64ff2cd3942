//! Rebuild the runtime when the UI bundle or the PostgreSQL migrations it embeds change (a new
//! migration file is otherwise not seen by `sqlx::migrate!`).

fn main() {
    println!("cargo:rerun-if-changed=../ui/dist");
    println!("cargo:rerun-if-changed=migrations");
}
