//! The committed OpenAPI document is the one the code generates.

use tasks_test_support::process::ServiceCommand;

use crate::support::BIN;

#[test]
fn committed_document_matches_the_code() {
    let output = ServiceCommand::new(BIN, "TASKS").arg("openapi").output();
    assert!(output.success(), "{}", output.report());
    let generated: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        generated == committed,
        "docs/openapi.json is out of date: run `just openapi-update` and commit the result"
    );
    assert!(generated["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in ["/v1/tasks", "/v1/tasks/{id}", "/openapi.json"] {
        assert!(
            generated["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
}
