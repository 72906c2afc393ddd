"""InferenceService and ServingRuntime builders: CRD-valid output, labels, autoscaling, errors, manifests in step."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfkit.config import DeployConfig, KfkitConfig, compose
from kfkit.deploy.inference_service import build_inference_service, build_serving_runtime, to_yaml
from kfkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO.parent / "shared" / "crds"  # CI clones the repo with shared/ beside it
URI = "s3://kfkit-models/breast-cancer-mlp/3"


@pytest.fixture(scope="module")
def cfg() -> KfkitConfig:
    return compose(["deploy=kserve"])


def with_deploy(cfg: KfkitConfig, **changes: Any) -> KfkitConfig:
    return dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, **changes))


def validate(docs: list[dict]) -> subprocess.CompletedProcess:
    """Run shared/crds/validate.py on the documents; skip when shared/ is not beside the repo."""
    if not (CRDS / "validate.py").is_file():
        pytest.skip(f"missing tool: CRD schemas not found at {CRDS} (shared/ must be cloned beside the repository)")
    return subprocess.run(
        [sys.executable, str(CRDS / "validate.py"), "--crds", str(CRDS), "-"],
        input=to_yaml(docs),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_does_not_load_kserve_or_torch():
    code = "import sys, kfkit.deploy.inference_service; print(sorted({'kserve', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_builder_output_validates_against_crds(cfg):
    docs = [
        build_serving_runtime(cfg),
        build_inference_service(cfg, storage_uri=URI),
        build_inference_service(
            with_deploy(cfg, protocol_version="grpc-v2", min_replicas=0, container_concurrency=4),
            storage_uri="pvc://registry/fraud-mlp/2",
            model_name="fraud-mlp",
        ),
        build_inference_service(with_deploy(cfg, autoscaling_metric="cpu", autoscaling_target=70), storage_uri=URI),
    ]
    result = validate(docs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout
    assert result.stdout.count("OK ") == len(docs), result.stdout


def test_validator_rejects_a_misspelt_field(cfg):
    """The CRD check above can fail: an unknown field is an error."""
    isvc = build_inference_service(cfg, storage_uri=URI)
    isvc["spec"]["predictor"]["minReplica"] = isvc["spec"]["predictor"].pop("minReplicas")
    result = validate([isvc])
    assert result.returncode == 1
    assert 'unknown field "minReplica"' in result.stdout


def test_inference_service_metadata_and_predictor(cfg):
    isvc = build_inference_service(cfg, storage_uri=URI)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"] == "breast-cancer-mlp"
    assert isvc["metadata"]["namespace"] == "kfkit"
    assert isvc["metadata"]["labels"] == {
        "app.kubernetes.io/name": "kfkit",
        "app.kubernetes.io/instance": "breast-cancer-mlp",
        "app.kubernetes.io/version": "3",
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/part-of": "kfkit",
        "app.kubernetes.io/managed-by": "kfkit",
    }
    assert isvc["metadata"]["annotations"] == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": "10",
    }
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert "containerConcurrency" not in predictor  # 0 = no limit = left out
    assert predictor["serviceAccountName"] == "kfkit"
    assert "securityContext" not in predictor  # Knative rejects pod-level securityContext by default
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "kfkit", "version": "1"}
    assert model["runtime"] == "kfkit"
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"] == URI + "/"  # a version folder, written with its slash
    assert model["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert "ports" not in model and "args" not in model


def test_deploy_settings_reach_the_manifest(cfg):
    changed = with_deploy(
        cfg,
        namespace="serving",
        min_replicas=2,
        max_replicas=9,
        autoscaling_metric="rps",
        autoscaling_target=150,
        container_concurrency=6,
        cpu_limit="2",
        memory_request="1Gi",
        service_account="reader",
    )
    isvc = build_inference_service(changed, storage_uri=URI, model_name="fraud-mlp", model_version="2024-06-01.1")
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["namespace"] == "serving"
    assert isvc["metadata"]["name"] == isvc["metadata"]["labels"]["app.kubernetes.io/instance"] == "fraud-mlp"
    assert isvc["metadata"]["labels"]["app.kubernetes.io/version"] == "2024-06-01.1"
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/metric"] == "rps"
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "150"
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["containerConcurrency"]) == (2, 9, 6)
    assert predictor["serviceAccountName"] == "reader"
    assert predictor["model"]["resources"]["limits"]["cpu"] == "2"
    assert predictor["model"]["resources"]["requests"]["memory"] == "1Gi"


@pytest.mark.parametrize(("metric", "autoscaler"), [("cpu", "hpa"), ("memory", "hpa"), ("rps", "kpa")])
def test_autoscaler_class_follows_the_metric(cfg, metric, autoscaler):
    isvc = build_inference_service(with_deploy(cfg, autoscaling_metric=metric), storage_uri=URI)
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == f"{autoscaler}.autoscaling.knative.dev"


def test_scale_to_zero(cfg):
    isvc = build_inference_service(with_deploy(cfg, min_replicas=0), storage_uri=URI)
    assert isvc["spec"]["predictor"]["minReplicas"] == 0


def test_grpc_moves_onto_the_routed_port(cfg):
    model = build_inference_service(with_deploy(cfg, protocol_version="grpc-v2"), storage_uri=URI)["spec"]["predictor"][
        "model"
    ]
    assert model["protocolVersion"] == "grpc-v2"
    assert model["ports"] == [{"containerPort": 8080, "name": "h2c", "protocol": "TCP"}]
    assert model["args"] == ["--grpc_port=8080", "--http_port=8082"]


def test_serving_runtime_spec(cfg):
    runtime = build_serving_runtime(cfg)
    assert (runtime["apiVersion"], runtime["kind"]) == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    assert runtime["metadata"]["name"] == "kfkit"
    assert runtime["metadata"]["labels"]["app.kubernetes.io/component"] == "serving-runtime"
    spec = runtime["spec"]
    assert spec["supportedModelFormats"] == [{"name": "kfkit", "version": "1", "autoSelect": True}]
    assert spec["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == cfg.deploy.image
    assert container["command"] == ["python", "-m", "kfkit.serving.server"]
    assert container["args"][:2] == ["--model-uri=/mnt/models", "--model_name={{.Name}}"]
    assert container["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]  # Knative: one port
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {}}]


@pytest.mark.parametrize(
    "overrides",
    [[], ["serving.max_batch_size=1", "serving.max_batch_latency_ms=0.5", "serving.max_body_bytes=1048576"]],
)
def test_runtime_args_carry_the_serving_settings(overrides):
    """serving.max_batch_size, max_batch_latency_ms and max_body_bytes reach the server in the cluster too."""
    from kfkit.serving.server import build_parser

    cfg = compose(["deploy=kserve", *overrides])
    args = build_serving_runtime(cfg)["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    s = cfg.serving
    assert (parsed.max_batch_size, parsed.max_batch_latency_ms, parsed.max_body_bytes) == (
        s.max_batch_size,
        s.max_batch_latency_ms,
        s.max_body_bytes,
    )
    if overrides:
        assert args[-3:] == ["--max-batch-size=1", "--max-batch-latency-ms=0.5", "--max-body-bytes=1048576"]


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_runtime_args_are_accepted_by_the_kfkit_server(cfg, protocol):
    """What KServe hands the container (runtime args + InferenceService args) parses with the real server parser."""
    from kfkit.serving.server import build_parser

    runtime_args = build_serving_runtime(cfg)["spec"]["containers"][0]["args"]
    isvc = build_inference_service(with_deploy(cfg, protocol_version=protocol), storage_uri=URI)
    args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in runtime_args]
    args += isvc["spec"]["predictor"]["model"].get("args", [])
    parsed = build_parser().parse_args(args)
    assert parsed.model_uri == "/mnt/models"
    assert parsed.model_name == "breast-cancer-mlp"
    assert parsed.host == "0.0.0.0"
    assert (parsed.http_port, parsed.grpc_port) == ((8082, 8080) if protocol == "grpc-v2" else (8080, 8081))


@pytest.mark.parametrize(
    "uri", ["file:///tmp/registry/m/1", "/data/m/1", "s3://", "ftp://host/m/1", "http://host/m/1", "", "S3://b/m/1"]
)
def test_unsupported_storage_uri_is_a_config_error(cfg, uri):
    with pytest.raises(ConfigError) as info:
        build_inference_service(cfg, storage_uri=uri)
    message = str(info.value)
    assert repr(uri) in message
    assert "s3://" in message and "pvc://" in message  # says what would work


def test_local_storage_uri_says_to_publish_to_s3(cfg):
    with pytest.raises(ConfigError, match="publish the version to an S3 registry"):
        build_inference_service(cfg, storage_uri="file:///home/me/.kfkit/registry/m/1")


@pytest.mark.parametrize(
    ("uri", "written"),
    [("s3://b/m/1", "s3://b/m/1/"), ("gs://b/m/1/", "gs://b/m/1/"), ("pvc://claim/m/12", "pvc://claim/m/12/"),
     ("https://host/m/1.tar.gz", "https://host/m/1.tar.gz")],
)  # fmt: skip
def test_supported_storage_uris(cfg, uri, written):
    """A version folder is written with its slash: KServe lists by prefix, so s3://b/m/1 would match …/10/."""
    assert build_inference_service(cfg, storage_uri=uri)["spec"]["predictor"]["model"]["storageUri"] == written


@pytest.mark.parametrize("uri", ["s3://bucket/model/", "s3://bucket/m/01", "gs://b/m/v2", "pvc://claim/7"])
def test_storage_uri_must_be_a_published_version(cfg, uri):
    with pytest.raises(ConfigError, match=r"is not a published version: it must end in <model name>/<version>"):
        build_inference_service(cfg, storage_uri=uri)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"min_replicas": 4, "max_replicas": 3}, "min_replicas=4"),
        ({"min_replicas": -1}, "min_replicas=-1"),
        ({"max_replicas": 0, "min_replicas": 0}, "max_replicas=0"),
        ({"autoscaling_metric": "cpu", "min_replicas": 0}, "scale to zero"),
        ({"autoscaling_metric": "latency"}, "autoscaling_metric='latency'"),
        ({"autoscaling_target": 0}, "autoscaling_target=0"),
        ({"container_concurrency": -2}, "container_concurrency=-2"),
        ({"protocol_version": "grpc"}, "protocol_version='grpc'"),
    ],
)
def test_inconsistent_deploy_settings_are_config_errors(cfg, changes, match):
    with pytest.raises(ConfigError, match=match):
        build_inference_service(with_deploy(cfg, **changes), storage_uri=URI)


@pytest.mark.parametrize("name", ["Fraud", "1fraud", "fraud_mlp", "fraud-", "f" * 48])
def test_invalid_model_name_is_a_config_error(cfg, name):
    with pytest.raises(ConfigError, match="cannot name an InferenceService"):
        build_inference_service(cfg, storage_uri=URI, model_name=name)


def test_version_label(cfg):
    def label(uri: str, version: str | None = None) -> str | None:
        isvc = build_inference_service(cfg, storage_uri=uri, model_version=version)
        return isvc["metadata"]["labels"].get("app.kubernetes.io/version")

    assert label("s3://b/m/7/") == "7"
    assert label("https://host/m/v 2+rc") == "v-2-rc"  # derived values are tidied, not rejected
    assert label("s3://b/m/7", "2024.06") == "2024.06"
    with pytest.raises(ConfigError, match="model_version='-bad'"):
        label("s3://b/m/7", "-bad")


def test_to_yaml_round_trips(cfg):
    docs = [build_serving_runtime(cfg), build_inference_service(cfg, storage_uri=URI)]
    text = to_yaml(docs)
    assert text.startswith("---\n") and text.count("\n---\n") == 1
    assert list(yaml.safe_load_all(text)) == docs


def test_manifests_base_matches_the_builders(cfg):
    base = REPO / "manifests" / "base"
    (runtime,) = yaml.safe_load_all((base / "servingruntime.yaml").read_text())
    assert runtime == build_serving_runtime(cfg)
    (isvc,) = yaml.safe_load_all((base / "inferenceservice.yaml").read_text())
    expected = build_inference_service(
        cfg, storage_uri=isvc["spec"]["predictor"]["model"]["storageUri"], model_name=isvc["metadata"]["name"]
    )
    assert isvc == expected
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://kfkit-models/")
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == ["inferenceservice.yaml", "serviceaccount.yaml", "servingruntime.yaml"]


def test_deploy_yaml_mirrors_every_deploy_field():
    keys = yaml.safe_load((REPO / "configs" / "deploy" / "kserve.yaml").read_text()).keys()
    assert set(keys) == {f.name for f in dataclasses.fields(DeployConfig)}


# --- deployment modes, autoscaling, placement, logger, transformer, lineage ----------------------------------


SPELLINGS = [("Serverless", "knative"), ("knative", "knative"), ("RawDeployment", "standard"),
             ("Standard", "standard"), ("raw_deployment", "standard")]  # fmt: skip


@pytest.mark.parametrize(("spelling", "mode"), SPELLINGS)
def test_both_spellings_of_each_mode(spelling, mode):
    from kfkit.deploy.autoscaling import deployment_mode

    assert deployment_mode(spelling) == mode


def test_unknown_mode_is_a_config_error(cfg):
    with pytest.raises(ConfigError, match=r"deploy.mode='modelmesh' is not a KServe deployment mode"):
        build_inference_service(with_deploy(cfg, mode="modelmesh"), storage_uri=URI)


def test_knative_scale_to_zero_with_delay_and_initial_scale(cfg):
    isvc = build_inference_service(
        with_deploy(cfg, min_replicas=0, scale_down_delay="15m", initial_scale=2, autoscaling_metric="rps"),
        storage_uri=URI,
    )
    assert isvc["metadata"]["annotations"] == {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "rps",
        "autoscaling.knative.dev/target": "10",
        "autoscaling.knative.dev/scale-down-delay": "15m",
        "autoscaling.knative.dev/initial-scale": "2",
    }
    assert isvc["spec"]["predictor"]["minReplicas"] == 0 and "autoScaling" not in isvc["spec"]["predictor"]


def test_standard_mode_hpa_on_cpu(cfg):
    isvc = build_inference_service(
        with_deploy(cfg, mode="RawDeployment", autoscaling_metric="cpu", autoscaling_target=70), storage_uri=URI
    )
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Standard",
        "serving.kserve.io/autoscalerClass": "hpa",
    }
    assert isvc["spec"]["predictor"]["autoScaling"] == {
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                   "averageUtilization": 70}}}]
    }  # fmt: skip


@pytest.mark.parametrize(("metric", "query"), [
    ("rps", 'sum(rate(kfkit_requests_total{namespace="kfkit",model="breast-cancer-mlp"}[1m]))'),
    ("concurrency", 'sum(rate(kfkit_request_duration_seconds_sum{namespace="kfkit",model="breast-cancer-mlp"}[1m]))'),
])  # fmt: skip
def test_standard_mode_keda_on_the_predictors_metrics(cfg, metric, query):
    changed = with_deploy(cfg, mode="standard", autoscaling_metric=metric, autoscaling_target=200, min_replicas=0)
    isvc = build_inference_service(changed, storage_uri=URI)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert isvc["spec"]["predictor"]["minReplicas"] == 0  # KEDA on a Prometheus query can scale to zero
    assert isvc["spec"]["predictor"]["autoScaling"] == {"metrics": [{"type": "External", "external": {
        "metric": {"backend": "prometheus", "serverAddress": cfg.deploy.prometheus_url, "query": query,
                   "namespace": "kfkit"},
        "target": {"type": "Value", "value": "200"}}}]}  # fmt: skip


def test_keda_query_can_be_given(cfg):
    query = 'sum(kfkit_inflight{namespace="kfkit"})'
    changed = with_deploy(cfg, mode="standard", autoscaler="keda", autoscaling_metric="rps", keda_query=query)
    metric = build_inference_service(changed, storage_uri=URI)["spec"]["predictor"]["autoScaling"]["metrics"][0]
    assert metric["external"]["metric"]["query"] == query


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mode": "standard", "autoscaling_metric": "cpu", "min_replicas": 0},
         "deploy.min_replicas=0 with the HPA: a HorizontalPodAutoscaler cannot scale to zero and KServe silently "
         "treats minReplicas 0 as 1"),
        ({"mode": "standard", "autoscaler": "hpa", "autoscaling_metric": "rps"}, "KServe's HPA scales on cpu"),
        ({"mode": "standard", "autoscaler": "keda", "autoscaling_metric": "cpu", "min_replicas": 0},
         "KEDA cannot scale to zero on CPU or memory alone"),
        ({"mode": "standard", "scale_down_delay": "5m"}, "scale_down_delay='5m' is a Knative autoscaler setting"),
        ({"mode": "standard", "autoscaler": "kpa"}, "deploy.autoscaler=kpa is Knative's autoscaler"),
        ({"autoscaler": "keda"}, "deploy.autoscaler=keda scales Standard-mode Deployments only"),
        ({"autoscaler": "kpa", "autoscaling_metric": "cpu"}, "is not a KPA metric"),
        ({"autoscaler": "hpa", "autoscaling_metric": "rps"}, "needs Knative's KPA"),
        ({"autoscaler": "vpa"}, "deploy.autoscaler='vpa' is not one of auto, kpa, hpa, keda"),
        ({"scale_down_delay": "2h"}, "over Knative's limit of 1h"),
        ({"scale_down_delay": "soon"}, "is not a duration"),
        ({"initial_scale": 0}, "needs scale to zero"),
        ({"initial_scale": 9}, "must be between 0 and deploy.max_replicas=3"),
        ({"gpus": -1}, "deploy.gpus=-1"),
        ({"logger_url": "http://a", "logger_broker": "kfkit"}, "the logger posts to one place"),
        ({"logger_url": "kfkit-drift:8090"}, "must be an http:// or https:// URL"),
        ({"logger_mode": "both"}, "deploy.logger_mode='both'"),
        ({"tolerations": [{"key": "a", "efect": "NoSchedule"}]}, r"tolerations\[0\] has unknown keys \['efect'\]"),
        ({"mode": "standard", "keda_query": "up", "autoscaling_metric": "cpu"}, "deploy.keda_query is KEDA's query"),
    ],
)  # fmt: skip
def test_scaling_and_wiring_mistakes_are_config_errors(cfg, changes, match):
    with pytest.raises(ConfigError, match=match):
        build_inference_service(with_deploy(cfg, **changes), storage_uri=URI)


def test_gpus_node_selector_tolerations(cfg):
    gpu = compose(["deploy=kserve-gpu"])
    predictor = build_inference_service(gpu, storage_uri=URI)["spec"]["predictor"]
    assert predictor["model"]["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 1},
    }
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nvidia.com/gpu" not in build_serving_runtime(gpu)["spec"]["containers"][0]["resources"]["limits"]


def test_logger_to_the_drift_detector_or_a_broker(cfg):
    url = "http://kfkit-drift.kfkit.svc.cluster.local:8090"
    predictor = build_inference_service(with_deploy(cfg, logger_url=url), storage_uri=URI)["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "all", "url": url}
    broker = with_deploy(cfg, logger_broker="kfkit", logger_mode="request")
    assert build_inference_service(broker, storage_uri=URI)["spec"]["predictor"]["logger"] == {
        "mode": "request", "url": "http://broker-ingress.knative-eventing.svc.cluster.local/kfkit/kfkit"}  # fmt: skip


def test_feast_transformer_and_custom_container(cfg):
    from kfkit.serving.server import build_parser as server_parser
    from kfkit.serving.transformer import build_parser as transformer_parser

    changed = with_deploy(cfg, feast_repo="/opt/feast", predictor_image="registry.example.com/kfkit:2", gpus=1)
    isvc = build_inference_service(changed, storage_uri=URI)
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert "model" not in isvc["spec"]["predictor"]
    assert container["image"] == "registry.example.com/kfkit:2"
    assert {"name": "STORAGE_URI", "value": URI + "/"} in container["env"]  # KServe's storage initializer reads it
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    parsed = server_parser().parse_args(container["args"])
    assert (parsed.model_uri, parsed.model_name) == ("/mnt/models", "breast-cancer-mlp")
    (transformer,) = isvc["spec"]["transformer"]["containers"]
    assert transformer["command"] == ["python", "-m", "kfkit.serving.transformer"]
    # KServe appends --model_name and --predictor_host to a transformer's args.
    args = transformer_parser().parse_args([*transformer["args"], "--predictor_host=x-predictor.kfkit"])
    assert (args.feast_repo, args.model_uri, args.predictor_host) == ("/opt/feast", "/mnt/models", "x-predictor.kfkit")
    assert transformer["securityContext"]["readOnlyRootFilesystem"] is True
    result = validate([isvc])
    assert result.returncode == 0, result.stdout + result.stderr


def test_lineage_labels_and_annotations(cfg):
    lineage = {"model": "breast-cancer-mlp", "version": "3", "registry_uri": "s3://kfkit-models", "model_uri": URI,
               "git_commit": "0123abc", "pipeline_run_id": "run-9", "dataset_sha256": ""}  # fmt: skip
    isvc = build_inference_service(cfg, storage_uri=URI, lineage=lineage)
    assert isvc["metadata"]["labels"]["kfkit.io/model"] == "breast-cancer-mlp"
    assert isvc["metadata"]["labels"]["kfkit.io/model-version"] == "3"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["kfkit.io/git-commit"] == "0123abc" and annotations["kfkit.io/pipeline-run-id"] == "run-9"
    assert "kfkit.io/dataset-sha256" not in annotations  # empty values are left out
    with pytest.raises(ConfigError, match="lineage key 'branch'"):
        build_inference_service(cfg, storage_uri=URI, lineage={"branch": "main"})


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "configs" / "deploy").glob("kserve*.yaml")))
def test_every_cluster_deploy_config_builds_crd_valid_objects(option):
    cfg = compose([f"deploy={option}"])
    assert cfg.deploy.target == "kserve"
    docs = [build_serving_runtime(cfg), build_inference_service(cfg, storage_uri=URI)]
    result = validate(docs)
    assert result.returncode == 0, result.stdout + result.stderr
