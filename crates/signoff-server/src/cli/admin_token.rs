//! `signoff admin-token`: a new admin API token and its hash.

/// Prints a new random admin token and its SHA-256.
pub fn run() {
    use base64::Engine as _;
    use rand::RngCore as _;
    use sha2::Digest as _;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("token:  {token}");
    println!("sha256: {hex}");
    eprintln!(
        "Give the token to the admin client (Authorization: Bearer TOKEN) and start the \
         gateway with --admin-token-sha256 {hex}. signoff keeps only the hash."
    );
}
