// `sqlx::migrate!` embeds the migration files at compile time; without
// this, an edited .sql file would not trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
