"""Label normalization: the few labels playbooks key on, derived the same way from every sender.

Real alerts name one thing many ways. A crash-looping pod arrives as ``pod="checkout-6f9c7b8d5-x7k2p"``,
a stuck rollout as ``deployment="checkout"``, kube-state-metrics' owner series as
``owner_kind="ReplicaSet", owner_name="checkout-6f9c7b8d5"``. Environments hide in ``cluster``,
``namespace``, ``env`` or ``environment``. Intake adds these labels to every signal before it is
stored, so triggers, group keys and templates read one name:

- ``workload`` and ``workload_kind``: from ``workload``/``workload_type`` (kubernetes-mixin's relabel
  rule), else ``deployment``, ``statefulset``, ``daemonset`` or ``job_name``, else
  ``owner_kind``/``owner_name`` (a ReplicaSet's name without its pod-template-hash), else ``pod``
  (``<deployment>-<hash>-<suffix>`` or ``<statefulset>-<ordinal>``; a DaemonSet's pod is not guessed).
- ``env``: the strictest of the ``env``/``environment`` label's value and every
  ``labels.environments`` rule in config that matches (``cluster: prod-.*``, ...); prod > staging >
  dev; the config's ``environment`` when nothing says.
- ``host``: ``instance`` without its port (``db-01:9100`` -> ``db-01``), or a probed URL's host.
- ``consumer_group``: ``consumergroup`` (kafka_exporter) or ``group`` (Burrow).

Derived labels are added only where the sender did not set them, except ``env``, which always
holds the normalized environment (the sender's value stays in the raw alert). "Strictest wins"
means a label can make an alert more protected, never less: an alert from a prod cluster that
says ``env="dev"`` is prod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.model.signals import Signal
from bot.playbooks.schema import Regex

ENVIRONMENTS = ("dev", "staging", "prod")  # least to most protected
_STRICTNESS = {name: rank for rank, name in enumerate(ENVIRONMENTS)}

# Values teams put in env/environment labels, by the environment they mean.
ENVIRONMENT_ALIASES = {
    **dict.fromkeys(("prod", "production", "prd", "live"), "prod"),
    **dict.fromkeys(("staging", "stage", "stg", "preprod", "pre-prod", "uat"), "staging"),
    **dict.fromkeys(("dev", "development", "test", "testing", "qa", "sandbox", "local"), "dev"),
}

# Kubernetes names generated suffixes from this alphabet (no vowels, no 0, 1 or 3), so a
# pod-template-hash or a pod's random suffix can be told from a word of the workload's name.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<name>[a-z0-9][a-z0-9.-]*?)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_REPLICASET = re.compile(rf"^(?P<name>[a-z0-9][a-z0-9.-]*?)-{_SAFE}{{6,10}}$")
_STATEFULSET_POD = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]*?)-(?:0|[1-9][0-9]{0,4})$")

_KIND_LABELS = (("deployment", "deployment"), ("statefulset", "statefulset"), ("daemonset", "daemonset"),
                ("job_name", "job"))
_OWNER_KINDS = {"replicaset": "deployment", "statefulset": "statefulset", "daemonset": "daemonset",
                "job": "job", "deployment": "deployment"}


class EnvironmentRule(BaseModel):
    """``labels.environments`` in config: alerts whose ``label`` fullmatches ``match`` belong to
    ``environment``."""

    model_config = ConfigDict(extra="forbid")

    environment: str
    label: str = Field(min_length=1, max_length=100)
    match: Regex  # checked like a playbook trigger's match_re

    @field_validator("environment")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in _STRICTNESS:
            raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
        return value



class LabelsConfig(BaseModel):
    """The ``labels`` section of the config."""

    model_config = ConfigDict(extra="forbid")

    environments: list[EnvironmentRule] = Field(default_factory=list)


def workload_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """The (kind, name) of the Kubernetes workload an alert is about, or None."""
    if labels.get("workload"):
        kind = labels.get("workload_type") or labels.get("workload_kind")
        if not kind:  # a workload named by the sender, of the kind its other labels show
            other = workload_of({k: v for k, v in labels.items() if k != "workload"})
            kind = other[0] if other else ""
        return kind.lower(), labels["workload"]
    for label, kind in _KIND_LABELS:
        if labels.get(label):
            return kind, labels[label]
    owner_kind, owner_name = labels.get("owner_kind", "").lower(), labels.get("owner_name", "")
    if owner_name and owner_kind in _OWNER_KINDS:
        if owner_kind == "replicaset":
            replicaset = _REPLICASET.match(owner_name)
            return ("deployment", replicaset["name"]) if replicaset else ("replicaset", owner_name)
        return _OWNER_KINDS[owner_kind], owner_name
    pod = labels.get("pod", "")
    if deployment_pod := _DEPLOYMENT_POD.match(pod):
        return "deployment", deployment_pod["name"]
    if statefulset_pod := _STATEFULSET_POD.match(pod):
        return "statefulset", statefulset_pod["name"]
    return None


def host_of(instance: str) -> str | None:
    """``db-01:9100`` -> ``db-01``; ``https://shop.example.com/health`` -> ``shop.example.com``;
    ``[2001:db8::1]:9100`` -> ``2001:db8::1``."""
    text = instance.strip()
    if not text:
        return None
    if "://" in text:
        try:
            return urlsplit(text).hostname or None
        except ValueError:
            return None
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 1 else None
    if text.count(":") == 1:
        return text.split(":", 1)[0] or None
    return text


class LabelNormalizer:
    """Adds the derived labels to signals (see the module docstring for the rules).

    Args:
        default_environment: the config's ``environment``, for alerts that name none.
        rules: ``labels.environments`` from config.
    """

    def __init__(self, default_environment: str, rules: Iterable[EnvironmentRule] = ()) -> None:
        self.default_environment = default_environment
        self._rules = [(rule.label, re.compile(rule.match), rule.environment) for rule in rules]

    def environment_of(self, labels: Mapping[str, str]) -> str:
        # Runs for every alert at intake: ranks, not names, and no lists built on the way.
        best = -1
        for name in ("env", "environment"):
            value = labels.get(name)
            if value:
                alias = ENVIRONMENT_ALIASES.get(value.strip().lower())
                if alias is not None:
                    best = max(best, _STRICTNESS[alias])
        for label, pattern, env in self._rules:
            value = labels.get(label)
            if value is not None and _STRICTNESS[env] > best and pattern.fullmatch(value) is not None:
                best = _STRICTNESS[env]
        return ENVIRONMENTS[best] if best >= 0 else self.default_environment

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """``labels`` plus the derived ones."""
        out = dict(labels)
        if (workload := workload_of(labels)) is not None:
            out.setdefault("workload_kind", workload[0])
            out.setdefault("workload", workload[1])
        if "host" not in out and (host := host_of(labels.get("instance", ""))):
            out["host"] = host
        if "consumer_group" not in out and (group := labels.get("consumergroup") or labels.get("group")):
            out["consumer_group"] = group
        out["env"] = self.environment_of(labels)
        return out

    def signal(self, signal: Signal) -> Signal:
        return signal.with_labels(self.labels(signal.labels))

    def __call__(self, signals: list[Signal]) -> list[Signal]:
        return [self.signal(s) for s in signals]
