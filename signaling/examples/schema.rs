//! Prints the protocol's JSON Schema; `signaling/schema.json` is this output.
fn main() {
    let schema = convene_signaling::json_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).expect("schema serialises")
    );
}
