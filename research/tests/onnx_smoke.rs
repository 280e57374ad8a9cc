//! ONNX Runtime really loads from the extracted wheel library and scores a
//! model built by our own graph writer, matching a native computation.

use mlcore_models::runtime;
use mlcore_research::onnx::graph;
use mlcore_testkit as testutil;

#[test]
fn onnx_runtime_scores_a_logistic_model_like_native_code() {
    runtime::init(&testutil::ort_library()).expect("ONNX Runtime must load: run scripts/setup-ort.sh");
    let weights = [0.8f32, -1.5, 0.25, 2.0];
    let bias = -0.1f32;
    let bytes = graph::logistic_regression("smoke", &weights, bias).unwrap();
    let mut session = runtime::hot_path_session(&bytes).unwrap();

    let rows = 64usize;
    let x: Vec<f32> = (0..rows * weights.len())
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let input = ort::value::TensorRef::from_array_view(([rows, weights.len()], &x[..])).unwrap();
    let outputs = session.run(ort::inputs!["x" => input]).unwrap();
    let (shape, probs) = outputs["prob"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(&shape[..], &[rows as i64, 1]);
    for (r, p) in probs.iter().enumerate() {
        let z: f32 = x[r * 4..r * 4 + 4]
            .iter()
            .zip(weights)
            .map(|(a, w)| a * w)
            .sum::<f32>()
            + bias;
        let native = 1.0 / (1.0 + (-z).exp());
        assert!((p - native).abs() < 1e-6, "row {r}: ort {p} native {native}");
    }
}

#[test]
fn same_model_serialises_to_identical_bytes() {
    let a = graph::logistic_regression("m", &[1.0, 2.0], 0.5).unwrap();
    let b = graph::logistic_regression("m", &[1.0, 2.0], 0.5).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, graph::logistic_regression("m", &[1.0, 2.5], 0.5).unwrap());
}

#[test]
fn missing_library_is_a_clear_error() {
    let err = runtime::init(std::path::Path::new("/nonexistent/libonnxruntime.so.1.31.1")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not found") && msg.contains("setup-ort.sh"), "{msg}");
}

/// The daemon's preflight scores `mlcore_models::runtime::CANARY_ONNX`
/// without linking the graph writer; these are the bytes the writer makes
/// for `σ(x₀ + x₁)`. After a deliberate change to the writer, regenerate
/// the file with `MLCORE_WRITE_CANARY=1` and commit it.
#[test]
fn the_canary_is_what_the_graph_builder_writes() {
    let bytes = graph::logistic_regression("canary", &[1.0, 1.0], 0.0).unwrap();
    if std::env::var_os("MLCORE_WRITE_CANARY").is_some() {
        let path = testutil::workspace_root().join("models/src/canary.onnx");
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_eq!(
        runtime::CANARY_ONNX,
        &bytes[..],
        "models/src/canary.onnx differs from what the graph writer makes"
    );
    runtime::init(&testutil::ort_library()).unwrap();
    let p = runtime::score_canary().unwrap();
    let expected = 1.0 / (1.0 + (-0.5f32).exp());
    assert!(
        (p - expected).abs() < 1e-6,
        "canary scored {p}, expected σ(0.5) = {expected}"
    );
}
