"""The release gate: absolute floors from config, then champion/challenger on the same test rows."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import GateConfig, KfkitConfig
    from kfkit.registry import Registry

__all__ = ["Check", "GateDecision", "check_gate_config", "decide", "run_gate", "GATE_FILE"]

GATE_FILE = "gate.json"


@dataclass
class Check:
    """One gate check and its outcome."""

    kind: str
    """min (an absolute floor or ceiling from gate.min_metrics) or champion (vs the current champion)."""
    metric: str
    candidate: float | None
    """The candidate's test value (None if it could not be measured)."""
    limit: float | None
    """The value the candidate had to reach: the floor/ceiling, or the champion's value -/+ the margin."""
    passed: bool
    reason: str
    """One sentence, naming values and the setting that decides."""
    champion: float | None = None
    """The champion's value on the same rows (champion checks)."""


@dataclass
class GateDecision:
    """The gate's verdict on one candidate, with every check and the evidence behind it."""

    model: str
    passed: bool
    enabled: bool
    checks: list[Check] = field(default_factory=list)
    candidate: dict[str, Any] = field(default_factory=dict)
    """threshold and test metrics of the candidate."""
    champion: dict[str, Any] | None = None
    """alias, version, uri, threshold and metrics of the champion on the same test rows; None if there is none."""
    test_rows: int = 0
    test_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    decided_at: str = ""

    @property
    def failed(self) -> list[Check]:
        """The checks that did not pass."""
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line: the verdict and every failed check."""
        if self.passed:
            against = f" and {self.champion['alias']} version {self.champion['version']}" if self.champion else ""
            return f"gate passed {self.model}: {len(self.checks)} checks against gate.min_metrics{against}"
        reasons = "; ".join(c.reason for c in self.failed)
        return f"gate rejected {self.model}: {reasons}; nothing was published or deployed"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what gate.json holds)."""
        return asdict(self)

    def to_markdown(self) -> str:
        """A Markdown report (the Kubeflow UI shows Markdown artifacts)."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [f"## Gate {verdict}: {self.model}", ""]
        rows = f"{self.test_rows} test rows (sha256 `{self.test_sha256[:12]}`)" if self.test_sha256 else "test rows"
        if self.champion:
            c = self.champion
            lines.append(f"Candidate and champion ({c['alias']} = version {c['version']}) scored on the same {rows}.")
        else:
            lines.append(f"Candidate scored on {rows}; no champion to compare with.")
        lines += [f"- {n}" for n in self.notes]
        lines += ["", "| check | candidate | required | champion | result |", "|---|---|---|---|---|"]
        for check in self.checks:
            label = check.metric if check.kind == "min" else f"{check.metric} vs champion"
            op = "≤" if check.metric in _lower_is_better() else "≥"
            lines.append(
                f"| {label} | {_fmt(check.candidate)} | {op} {_fmt(check.limit)} | {_fmt(check.champion)} | "
                f"{'pass' if check.passed else '**fail**'} |"
            )
        if not self.passed:
            lines += ["", "Failed: " + "; ".join(c.reason for c in self.failed)]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _lower_is_better() -> tuple[str, ...]:
    from kfkit.evaluation.metrics import LOWER_IS_BETTER

    return LOWER_IS_BETTER


def check_gate_config(cfg: GateConfig) -> None:
    """Fail at once on metric names the gate cannot check (before any training).

    Raises:
        ConfigError: naming the key, the bad name and the valid ones.
    """
    from kfkit.evaluation.metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER

    known = (*HIGHER_IS_BETTER, *LOWER_IS_BETTER)
    for key, names in (("gate.min_metrics", list(cfg.min_metrics)), ("gate.compare_metrics", cfg.compare_metrics)):
        if unknown := [n for n in names if n not in known]:
            raise ConfigError(f"{key} names {unknown}, which evaluation does not measure; use {', '.join(known)}")
    for metric, bound in cfg.min_metrics.items():  # every gated metric is a rate or a probability error
        if not 0.0 <= float(bound) <= 1.0:
            raise ConfigError(
                f"gate.min_metrics.{metric}={bound} can never be met: {metric} lies in [0, 1]; "
                f"give a bound in that range, e.g. gate.min_metrics.{metric}=0.9"
            )


def decide(
    candidate: dict[str, float], cfg: GateConfig, *, model: str, champion: dict[str, Any] | None = None
) -> GateDecision:
    """Judge candidate test metrics against the config's floors and the champion's metrics on the same rows.

    Args:
        candidate: The candidate's test metrics.
        cfg: The gate config.
        model: Model name (for messages).
        champion: ``{"alias", "version", "metrics", ...}`` measured on the same rows, or None.

    Returns:
        The decision; ``passed`` is True only if every check passed (or the gate is disabled).
    """
    from kfkit.evaluation.metrics import LOWER_IS_BETTER

    check_gate_config(cfg)
    if not cfg.enabled:
        return GateDecision(model=model, passed=True, enabled=False, notes=["gate.enabled=false: not checked"])
    checks: list[Check] = []
    for metric, bound in cfg.min_metrics.items():
        value = candidate.get(metric)
        lower = metric in LOWER_IS_BETTER
        ok = _finite(value) and (value <= bound if lower else value >= bound)
        sign = ">" if lower else "<"
        reason = (f"{metric} {_fmt(value)} {'≤' if lower else '≥'} {bound}" if ok
                  else f"{metric} {_fmt(value) or 'not measured'} {sign} {'ceiling' if lower else 'floor'} {bound} "
                       f"(gate.min_metrics)")  # fmt: skip
        checks.append(Check(kind="min", metric=metric, candidate=value, limit=bound, passed=bool(ok), reason=reason))
    if champion is not None:
        where = f"{champion['alias']} version {champion['version']}"
        if champion.get("error"):
            checks.append(Check(kind="champion", metric="*", candidate=None, limit=None, passed=False,
                                reason=champion["error"]))  # fmt: skip
        else:
            for metric in cfg.compare_metrics:
                value, theirs = candidate.get(metric), champion["metrics"].get(metric)
                lower = metric in LOWER_IS_BETTER
                if not _finite(theirs):
                    checks.append(Check(kind="champion", metric=metric, candidate=value, limit=None, passed=True,
                                        champion=theirs, reason=f"{where} has no {metric} on these rows"))  # fmt: skip
                    continue
                limit = theirs + cfg.max_regression if lower else theirs - cfg.max_regression
                ok = _finite(value) and (value <= limit if lower else value >= limit)
                gap = abs(value - theirs) if _finite(value) else float("nan")
                reason = (
                    f"{metric} {_fmt(value)} is within gate.max_regression={cfg.max_regression} of {where} "
                    f"({_fmt(theirs)})"
                    if ok
                    else f"{metric} {_fmt(value)} is {gap:.4f} {'above' if lower else 'below'} {where} "
                    f"({_fmt(theirs)}) on the same test rows, more than gate.max_regression={cfg.max_regression}"
                )
                checks.append(Check(kind="champion", metric=metric, candidate=value, limit=limit, passed=bool(ok),
                                    champion=theirs, reason=reason))  # fmt: skip
    return GateDecision(model=model, passed=all(c.passed for c in checks), enabled=True, checks=checks,
                        champion=champion)  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def run_gate(
    cfg: KfkitConfig, *, prepared_dir: str | Path, evaluation_dir: str | Path, registry: Registry | None = None
) -> GateDecision:
    """Decide on the candidate that evaluate measured, scoring the champion (if any) on the same test rows.

    The champion is the version that ``gate.champion_alias`` points at in the registry, fetched and
    verified like any load, and scored at its own operating threshold.

    Raises:
        RegistryError: the registry cannot be read, or the champion fails verification.
        DatasetError: the test split is not the one the candidate was evaluated on.
    """
    from kfkit.data.prep import load_prepared
    from kfkit.errors import DatasetError
    from kfkit.evaluation.metrics import METRICS_FILE
    from kfkit.registry import sha256_file

    evaluation = json.loads((Path(evaluation_dir) / METRICS_FILE).read_text())
    test_path = Path(prepared_dir) / "test.parquet"
    test_sha = sha256_file(test_path)
    if evaluation.get("test_sha256") and evaluation["test_sha256"] != test_sha:
        raise DatasetError(
            f"{test_path} is not the test split the candidate was evaluated on (sha256 {test_sha[:12]} vs "
            f"{evaluation['test_sha256'][:12]}); wire the gate to the same prep output as evaluate"
        )
    champion = None
    notes: list[str] = []
    if cfg.gate.enabled and cfg.gate.compare_metrics:
        champion, note = _measure_champion(cfg, test_path, load_prepared(prepared_dir).label, registry)
        notes += [note] if note else []
    decision = decide(evaluation["metrics"], cfg.gate, model=cfg.model.name, champion=champion)
    decision.candidate = {"threshold": evaluation["threshold"], "metrics": evaluation["metrics"]}
    decision.test_rows = int(evaluation["metrics"].get("rows", 0))
    decision.test_sha256 = test_sha
    decision.notes = notes + decision.notes
    decision.decided_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return decision


def _measure_champion(
    cfg: KfkitConfig, test_path: Path, label: str, registry: Registry | None
) -> tuple[dict[str, Any] | None, str]:
    import pandas as pd

    from kfkit.errors import VersionNotFound
    from kfkit.evaluation.metrics import compute_metrics
    from kfkit.model import load_scorer
    from kfkit.registry import from_config

    registry = registry or from_config(cfg.registry)
    alias, name = cfg.gate.champion_alias, cfg.model.name
    try:
        version = registry.resolve_ref(name, alias)
    except VersionNotFound:
        return None, f"no {alias} version of {name} in {registry.uri} yet: absolute thresholds only"
    folder = registry.fetch(name, version)  # verified: a tampered champion is an error, not a comparison
    score, spec = load_scorer(folder)
    champion: dict[str, Any] = {"alias": alias, "version": version, "uri": registry.version_uri(name, version),
                                "threshold": spec.threshold}  # fmt: skip
    test = pd.read_parquet(test_path)
    if missing := [f for f in spec.feature_names if f not in test.columns]:
        champion["error"] = (
            f"{alias} version {version} needs features {missing[:5]} that this data lacks, so the two cannot be "
            f"compared on the same rows; to replace it anyway set gate.compare_metrics=[] for this run"
        )
        return champion, ""
    scores = score(test[spec.feature_names].to_numpy(dtype="float32"))
    champion["metrics"] = compute_metrics(test[label].to_numpy(), scores, spec.threshold).metrics
    return champion, ""
