"""deploy: start a KServe model server on this machine serving the published version."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def deploy(config: dict, model_uri: str, endpoint: Output[Artifact]):
    """Start the server (detached, so it outlives this step) and wait until the model is ready.

    Args:
        config: The whole kfkit config; ``serving`` and ``work_dir`` are used.
        model_uri: Version to serve (output of publish).
        endpoint: JSON file describing the live endpoint (URLs, ports, pid, log file).
    """
    import json
    import os

    from kfkit.config import from_dict
    from kfkit.deploy.local import start_server

    cfg = from_dict(config)
    log_dir = os.path.join(os.path.abspath(cfg.work_dir), "logs")
    os.makedirs(log_dir, exist_ok=True)
    live = start_server(
        model_uri,
        model_name=cfg.model.name,
        log_path=os.path.join(log_dir, f"server-{cfg.model.name}.log"),
        serving=cfg.serving,  # host, ports, batching, body limit, payload logging
    )
    with open(endpoint.path, "w") as f:
        json.dump(live.to_dict(), f, indent=2)
    endpoint.metadata.update({"v2_url": live.v2_url, "pid": live.pid})
    print(f"[deploy] {cfg.model.name} ready at {live.v2_url} (pid {live.pid})")
