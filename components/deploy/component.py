"""deploy: serve the published version, on this machine (target=local) or on a KServe cluster (target=kserve)."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def deploy(config: dict, model_uri: str, endpoint: Output[Artifact]):
    """Serve ``model_uri`` and wait until it is ready.

    ``deploy.target=local`` starts the model server detached (it outlives this step). ``deploy.target=kserve``
    applies the ServingRuntime and InferenceService with server-side apply (the pod's service account needs
    ``patch`` and ``get`` on them) and waits for Ready of the applied generation; a failure names its cause.

    Args:
        config: The whole kfkit config; ``deploy``, ``serving``, ``registry`` and ``work_dir`` are used.
        model_uri: Version to serve (output of publish); an s3:// registry for target=kserve.
        endpoint: JSON file describing the live endpoint (URLs; for local also ports, pid and log file).
    """
    import json
    import os

    from kfkit.config import from_dict

    cfg = from_dict(config)
    if cfg.deploy.target == "kserve":
        from kfkit.deploy.kserve import deploy_version

        result = deploy_version(cfg, model_uri=model_uri)
        live = result.endpoint()
        with open(endpoint.path, "w") as f:
            json.dump(live, f, indent=2)
        endpoint.metadata.update({"v2_url": live["v2_url"], "url": result.url, "generation": result.generation})
        print(f"[deploy] {result.name} version {result.version} Ready in {result.namespace}: {result.url}")
        return

    from kfkit.deploy.local import start_server

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
