"""The images and kubeflow config groups: defaults, interpolation into deploy.image, and their checks."""

import pytest

from kfkit.config import compose
from kfkit.errors import ConfigError

DIGEST = "sha256:" + "ab" * 32


def test_images_default_to_registry_and_tag_and_feed_deploy_image():
    cfg = compose(["deploy=kserve", "images.registry=registry.example.com:5000/ml", "images.tag=1.4.2"])
    assert cfg.images.main == "registry.example.com:5000/ml/kfkit:1.4.2"
    assert cfg.images.drift == "registry.example.com:5000/ml/kfkit-drift:1.4.2"
    assert cfg.deploy.image == cfg.images.main  # the ServingRuntime's image comes from images.main
    assert compose([]).deploy.image == "ghcr.io/kfkit/kfkit:0.1.0"


def test_images_pinned_by_digest_pass_require_digest():
    cfg = compose([f"images.main=ghcr.io/acme/kfkit@{DIGEST}", f"images.drift=ghcr.io/acme/kfkit-drift:2@{DIGEST}",
                   "images.require_digest=true"])  # fmt: skip
    assert cfg.images.main.endswith(DIGEST)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["images.main=ghcr.io/Acme/KFKIT:1"], "images.main='ghcr.io/Acme/KFKIT:1' is not an image reference"),
        (["images.main=ghcr.io/acme/kfkit@sha256:abc"], "is not an image reference"),
        (["images.require_digest=true"], "images.main='ghcr.io/kfkit/kfkit:0.1.0' has no digest"),
        (["kubeflow.auth=oauth"], "kubeflow.auth='oauth' is not one of auto, in_pod, token, none"),
        (["kubeflow.auth=token"], "kubeflow.auth=token needs kubeflow.token_file=PATH"),
        (["kubeflow.namespace=Team_A"], "kubeflow.namespace='Team_A' is not a Kubernetes namespace name"),
        (["kubeflow.recurring.cron=0 0 3 * * *", "kubeflow.recurring.interval_s=3600"], "set one"),
        (["kubeflow.recurring.interval_s=5"], "interval_s=5 must be at least 60 seconds"),
        (["kubeflow.recurring.max_concurrency=0"], "max_concurrency=0 must be at least 1"),
        (["kubeflow.train_retries=-1"], "kubeflow.train_retries=-1 must not be negative"),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        compose(overrides)
