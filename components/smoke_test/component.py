"""smoke_test: one real V2 request to the deployed endpoint, checked against the offline model."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def smoke_test(
    model_uri: str,
    version: str,
    prepared: Input[Dataset],
    evaluation: Input[Artifact],
    gate: Input[Artifact],
    endpoint: Input[Artifact],
    summary: Output[Artifact],
    promoted_to: str = "",
):
    """Send the first test row to the live endpoint and write the run summary.

    Args:
        model_uri: The served version.
        version: Its version number.
        prepared: Output of prep (the request row comes from its test split).
        evaluation: Output of evaluate (test metrics go into the summary).
        gate: Output of gate (its verdict goes into the summary).
        endpoint: Output of deploy.
        summary: JSON: model name, version, registry URI, alias, test metrics, gate, endpoint URLs, curl example.
        promoted_to: Alias publish pointed at the version.
    """
    from kfkit.deploy.smoke_test import run_smoke_test

    result = run_smoke_test(
        model_uri=model_uri,
        version=version,
        prepared_dir=prepared.path,
        evaluation_dir=evaluation.path,
        endpoint_path=endpoint.path,
        summary_path=summary.path,
        gate_path=gate.path,
        promoted_to=promoted_to,
    )
    print(f"[smoke_test] V2 infer answered probability {result['smoke_test']['probability']:.6f} (offline "
          f"{result['smoke_test']['offline_probability']:.6f})")  # fmt: skip
