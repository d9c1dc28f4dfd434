"""The options of the commands that are not a run or a study: each declared once, like schema.py's, and generated
into the CLI from here."""

from __future__ import annotations

from pathlib import Path

from .option import DATA, SEED_RANGE, Option, _opts

RUN_DIR = Option("run_dir", Path, None, "a finished run directory", argument=True, required=True, config=False)
PATHS = Option("paths", Path, None, "image files and/or folders (searched recursively)", argument=True, many=True,
               required=True, config=False)
DATA_DIR = Option("data_dir", Path, None, "where datasets live", config=False, shown="")
IMAGE_SIZE = Option("image_size", int, None, "folder/CSV images are resized to this once", config=False, shown="64")
CLASS_MAP = Option("class_map", Path, None, "YAML/JSON mapping folder names to class names", config=False, shown="")


def _c(*options: Option) -> dict[str, Option]:
    return _opts(*(o if not o.config else Option(**{**o.__dict__, "config": False}) for o in options))


EVALUATE = _c(
    RUN_DIR,
    Option("data", str, None, "evaluate on this dataset instead (same classes; read with the run's image size, "
           "channels and class map): the run's own dataset (its config.yaml spec) is evaluated on the run's test "
           "split (split.json), another on its official test split, or on all of its images when it has none",
           shown=""),
    Option("tta", bool, None, "test-time augmentation: the mirror, and the shifts of the run's own --tta-shift",
           shown="default: the run's own setting, tta in its "
           "config.yaml, as in its metrics.json"),
)
INSPECT = _c(
    DATA,
    Option("out", Path, Path("inspect"), "where the PNG charts go", short="-o"),
    DATA_DIR, IMAGE_SIZE, CLASS_MAP,
    Option("strict", "flag", False, "unreadable images are an error"),
    Option("as_json", "flag", False, "print the statistics as JSON", cli="--json"),
)
DOCTOR = _c(
    DATA,
    Option("split", Path, None, "count leakage across this split manifest (a split.json)", shown=""),
    Option("run", Path, None, "count leakage across this run directory's split", shown=""),
    Option("study", Path, None, "count leakage across this study's split", shown=""),
    Option("as_json", "flag", False, "print the whole report as one JSON document on stdout", cli="--json"),
    Option("strict", "flag", False, "exit 1 when anything serious is found (leakage, label conflicts, unreadable "
           "files)"),
    Option("label_issues", bool, True, "find mislabeled images with k-fold out-of-sample predictions"),
    Option("near", bool, True, "look for near-duplicates too", cli="--near/--exact-only"),
    Option("near_threshold", float, 0.99, "how alike two images must be, after alignment, to be called copies "
           "(ECC correlation; lower finds more re-edited copies and more look-alikes)", low=0.5, high=1.0),
    Option("folds", int, 5, "folds of the out-of-sample predictions", low=2, high=20),
    Option("label_model", str, "auto", "what the label issues' model sees: backbone (EfficientNet-Lite0's ImageNet "
           "features) | pixels (16x16) | auto (the backbone up to 10,000 images)"),
    Option("out", Path, None, "where the report and its grids go", short="-o",
           shown="CACHE/doctor/NAME, beside the data's cache"),
    Option("review", "flag", False, "then open a local page (127.0.0.1) to mark each finding keep, exclude or "
           "relabel; it saves curation.yaml beside the report (for train/study --curation)"),
    Option("review_port", int, 0, "the review page's port", shown="a free one", low=0, high=65535),
    DATA_DIR, IMAGE_SIZE, CLASS_MAP,
)
SUMMARY = _c(
    Option("model", str, None, "custom preset, layer-spec file or pretrained backbone", argument=True, required=True),
    Option("input", str, "3x32x32", "C×H×W of the data, e.g. 1x28x28"),
    Option("classes", int, 10, "number of classes"),
    Option("depth", int, 1, "how many module levels to expand (pretrained nets are deep)"),
    Option("input_size", int, None, "pretrained backbones: resolution they run at", shown=""),
)
PREDICT = _c(
    RUN_DIR, PATHS,
    Option("top_k", int, 5, "classes shown per image", short="-k", low=1),
    Option("fmt", str, "table", "table | csv | json", short="-f", cli="--format"),
    Option("output", Path, None, "write to this file instead of the screen", short="-o", shown=""),
    Option("batch_size", int, 64, "images per forward pass", short="-b", low=1),
)
EXPLAIN = _c(
    RUN_DIR, PATHS,
    Option("method", str, "gradcam", "gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam | scorecam | "
           "ablationcam (the last two run the model once per channel: slow)"),
    Option("target", str, None, "explain this class (name or index)", shown="each image's predicted class"),
    Option("layer", str, None, "the layer whose feature map is explained, as named in `cnnarena summary`",
           shown="the last one with at least 4x4 cells"),
    Option("top_k", int, 5, "classes shown per image", short="-k", low=1),
    Option("out", Path, None, "directory for the PNGs and explanations.json", shown="explain/RUN-NAME"),
    Option("device", str, "auto", "auto | cpu | cuda | mps"),
)
EXPORT = _c(
    RUN_DIR,
    Option("fmt", str, "onnx", "onnx | torchscript (torch.jit.load) | pt2 (torch.export's archive, torch.export.load) "
           "| web (a static folder that classifies in the browser with ONNX Runtime Web, checked in Chromium) "
           "| openvino (OpenVINO IR: model.xml + model.bin) | tflite (LiteRT, for phones; with --int8 quantized) "
           "| coreml (a Core ML ML Program for Apple apps)",
           short="-f", cli="--format"),
    Option("output", Path, None, "the file (a folder for web)", short="-o", shown="RUN_DIR/model.onnx, "
           "model.int8.onnx, model.pt, model.pt2, web/, model.xml, model[.int8].tflite or model.mlpackage"),
    Option("int8", "flag", False, "static int8 quantization (ONNX Runtime's, or LiteRT's with --format tflite), "
           "calibrated on training images; reports int8 vs float test accuracy and images/s"),
    Option("max_drop", float, 1.0, "with --int8: refuse when test accuracy drops by more points", low=0),
    Option("calibration", int, 256, "with --int8: training images to calibrate on", low=1),
    Option("timing", float, 2.0, "with --int8, web, openvino or tflite: seconds each model is timed at each batch "
           "size and thread count (longer is steadier)", low=0.1),
    Option("exporter", str, "torchscript", "ONNX exporter: torchscript | dynamo (needs onnxscript)"),
    Option("opset", int, 17, "ONNX opset (dynamo uses at least 18)"),
)
SERVE = _c(
    RUN_DIR,
    Option("host", str, "127.0.0.1", "address to listen on (0.0.0.0 for every interface)"),
    Option("port", int, 8000, "TCP port", low=0, high=65535),
    Option("backend", str, "onnx", "onnx (ONNX Runtime) | onnx-int8 (the model `export --int8` wrote) | torch "
           "(PyTorch eager)"),
    Option("max_batch", int, 32, "micro-batching: most images per inference", low=1),
    Option("max_wait_ms", float, 2.0, "micro-batching: longest wait for a batch to fill", low=0),
    Option("max_body_mb", float, 10.0, "largest request body in MiB (413 above)", low=0.001),
    Option("max_pixels", int, 40_000_000, "largest image in pixels (413 above)", low=1),
    Option("max_files", int, 16, "most images per request", low=1),
    Option("top_k", int, 5, "classes returned per image unless ?top_k= says otherwise", low=1),
    Option("body_timeout", float, 15.0, "seconds an upload may send nothing before it is cut off (408)", low=0.1),
    Option("head_timeout", float, 10.0, "seconds a connection has to send a whole request head (after opening, and "
           "after each answer) before it is closed", low=0.1),
    Option("max_connections", int, 64, "requests handled at once; more get 503 at once", low=1),
    Option("log_level", str, "info", "uvicorn log level: critical | error | warning | info | debug"),
    Option("cors", str, None, "let web pages from these origins call the API (comma-separated, e.g. "
           "https://app.example.com,http://localhost:3000; * for any)", shown="none"),
    Option("tls_cert", Path, None, "serve HTTPS with this PEM certificate (with --tls-key): the web page's webcam "
           "then works from other devices", shown=""),
    Option("tls_key", Path, None, "the PEM private key of --tls-cert", shown=""),
)
TUNE = _c(
    Option("data", str, None, "dataset (as for train)", argument=True, required=True),
    Option("model", str, None, "the model to tune", short="-m", required=True, shown=""),
    Option("trials", int, 20, "finished (complete or pruned) trials wanted, over all workers", low=1),
    Option("space", Path, None, "YAML/JSON search space: option: {low, high, log} | {choices: [...]} | a fixed value",
           shown="lr, weight decay, batch size, augmentation, label smoothing, epochs; backbones also unfreeze and "
           "finetune_lr_scale"),
    Option("storage", str, None, "Optuna storage URL shared by the workers, e.g. postgresql://...",
           shown="sqlite:///OUT/optuna.db"),
    Option("study_name", str, None, "Optuna study name", shown="DATA-MODEL"),
    Option("pruner", str, "median", "median | halving | none: stop trials that trail, epoch by epoch"),
    Option("seed", int, 0, "the sampler's seed", low=SEED_RANGE[0], high=SEED_RANGE[1]),
    Option("heartbeat", float, 10.0, "seconds between a worker's heartbeats; a trial silent for 3 of them (its "
           "worker died) is retried by another worker", low=1),
    Option("device", str, None, "auto | cpu | cuda | mps", shown="auto"),
    Option("mlflow", str, None, "also log to MLflow, one parent run with a child per trial (pruned ones end as "
           "KILLED): a tracking URI, or 'local' for sqlite:///mlflow.db here", shown=""),
    Option("out", Path, Path("tune"), "trial run directories, tune.json and tune_report.html", short="-o"),
)
LR_FIND = _c(
    DATA,
    Option("model", str, "simple-2conv", "model to probe", short="-m"),
    Option("optimizer", str, "adam", "adam | adamw | sgd"),
    Option("batch_size", int, 128, short="-b"),
    Option("steps", int, 100, "batches to probe (at least 5)"),
    Option("start_lr", float, 1e-7, "the LR of the first batch"),
    Option("end_lr", float, 10.0, "the LR of the last batch (above --start-lr)"),
    Option("input_size", int, None, "pretrained backbones: resolution they run at", shown=""),
    DATA_DIR,
    Option("out", Path, Path("lr_find.png"), "where the plot goes (.png added to a name without a suffix)",
           short="-o"),
)
MODELS = _c(
    Option("pattern", str, None, "search timm's model names (shell-style; a word matches anywhere)", argument=True),
    Option("all_models", "flag", False, "every timm model (with PATTERN: those that match)", cli="--all"),
)
