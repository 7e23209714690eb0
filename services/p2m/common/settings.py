"""One frozen settings object per process, from flags and environment (read in ``main``)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from p2m.common.errors import InvalidInput
from p2m.common.hub import hub_offline_by_env

ENV_PREFIX = "P2M_"
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SECRETS = ("llm_api_key", "gateway_token")  # also read from P2M_<NAME>_FILE
TRAINER_BACKENDS = ("local-ray", "rayjob")
DEPLOYER_BACKENDS = ("local", "kserve")
# What decodes a served student, and llama.cpp's weight precisions (p2m.llamacpp.runtime).
SERVING_RUNTIMES = ("auto", "llama.cpp", "transformers")
SERVING_PRECISIONS = ("f32", "f16", "bf16", "q8_0", "q5_0", "q4_0")
DEFAULT_SERVING_PRECISION = "q8_0"
# Kubernetes names: a namespace is a DNS-1123 label, a PersistentVolumeClaim a subdomain.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Settings:
    """Every knob of a p2m process. Environment: ``P2M_<FIELD>``; flags override it.

    Attributes:
        data_dir: Holds runs/, artifacts/, models/ and cache/. Every path setting is made
            absolute (against the working folder) when settings are built.
        host: Address a server binds to (loopback by default).
        port: Port a server listens on (0 picks a free one).
        log_level: DEBUG, INFO, WARNING or ERROR.
        log_format: "json" (one object per line) or "text".
        grace_s: Seconds in-flight RPCs get to finish on SIGTERM.
        max_prompt_bytes: Largest prompt accepted, in UTF-8 bytes.
        llm_base_url: Any OpenAI-compatible endpoint ("http://host:port/v1"); empty means the
            embedded local endpoint (llama.cpp) started on demand.
        llm_api_key: Bearer key for that endpoint (or ``P2M_LLM_API_KEY_FILE``); never logged.
        llm_model: Model name sent to the endpoint.
        llm_timeout_s: Per-request timeout.
        llm_max_retries: Retries after the first attempt (429, 5xx, timeouts).
        llm_max_concurrency: Requests in flight at once per client.
        llm_penalty_window: For an endpoint that is llama.cpp's server: tokens its repetition
            penalties look back (``repeat_last_n``, with requests that carry one); 0 sends
            none (llama.cpp looks 64 back). The embedded endpoint (and the local stack's) gets
            256 unless this is set (``EMBEDDED_PENALTY_WINDOW``).
        local_llm: Model the embedded endpoint serves: "qwen" (default teacher),
            "smollm2" (fast, for tests) or a path to a GGUF file.
        local_llm_parallel: Concurrent slots of the embedded endpoint.
        local_llm_ctx: Total context (tokens) of the embedded endpoint, shared by its slots.
        local_llm_threads: CPU threads of the embedded endpoint (0: all cores).
        catalog_dir: Folder holding ``hf_datasets.jsonl[.gz]`` and ``hf_models.jsonl[.gz]``;
            empty: no catalog (retrieval says so and the run goes on without it).
        datasets_dir: Folder of local dataset copies, one subfolder per catalog name.
        path_roots: More folders (separated by ``os.pathsep``) whose files a request may name
            by path (a dataset file, a base model folder, a catalog); the data dir and the
            datasets and catalog folders always may be.
        hub_offline: Treat the Hugging Face hub as unreachable (also when HF_HUB_OFFLINE=1).
        bertscore_hub_model: Score BERTScore with the paper's multilingual encoder
            (xlm-roberta-large from the hub) when the hub is reachable, instead of the
            shipped all-MiniLM-L6-v2.
        parser_addr, retriever_addr, generator_addr, trainer_addr, evaluator_addr,
            deployer_addr: HOST:PORT of each stage's service, for the gateway.
        gateway_token: Bearer token the gateway requires (or ``P2M_GATEWAY_TOKEN_FILE``, e.g. a
            mounted Kubernetes Secret); empty: no authentication. Never logged.
        max_running_runs: Runs the gateway works on at once; more wait in the queue.
        max_retrieved_rows: Rows a run keeps of a retrieved dataset.
        choice_timeout_s: How long an interactive run waits for an answer before taking the
            defaults.
        stage_patience_s: How long the gateway keeps calling a stage service that is down
            (being restarted) before the stage fails.
        train_memory_gb: Memory (GB) one machine gives a training's workers on it, e.g. a
            KubeRay worker pod's limit; 0: measured where Ray is local (this machine's available
            memory, within its cgroup), unknown elsewhere. Where full fine-tuning would not fit
            it and the request leaves the choice open, LoRA adapters are trained instead.
        trainer_backend: Where the trainer runs Ray Train: "local-ray" (in its own process, or
            the Ray cluster ``RAY_ADDRESS`` names) or "rayjob" (a KubeRay RayJob per training).
        deployer_backend: How the deployer serves models: "local" (a KServe ModelServer
            process on loopback) or "kserve" (a KServe InferenceService on the cluster).
        serving_runtime: What decodes a deployed student when a Deploy request leaves it
            unset: "auto" (llama.cpp where the student exports to GGUF, transformers
            otherwise), "llama.cpp" or "transformers".
        serving_precision: llama.cpp's weights when a Deploy or Evaluate request leaves them
            unset: "q8_0" (int8, the default), "f32" (the same answers as transformers), "f16",
            "bf16", "q5_0" or "q4_0". Where transformers serves (a T5, a GPU), f32.
        k8s_namespace: Namespace of the RayJobs and InferenceServices p2m creates.
        rayjob_template: The RayJob manifest (YAML) the chart renders; each training's
            name, entrypoint, worker count and GPUs are set on a copy of it.
        inferenceservice_template: The InferenceService manifest (YAML) the chart renders;
            each deployment's name, model and autoscaling are set on a copy of it.
        artifacts_pvc: The PersistentVolumeClaim holding the data dir (artifacts, cache),
            mounted at ``data_dir`` in every p2m pod; names the model in a ``pvc://``
            storageUri when the InferenceService template uses a KServe runtime.
        image: Image of the RayJob's Ray pods and of the project's predictor; empty: the
            templates' own.
        k8s_poll_s: Seconds between two reads of a RayJob's or InferenceService's status.
    """

    data_dir: Path = Path(".p2m")
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    log_format: str = "json"
    grace_s: float = 5.0
    max_prompt_bytes: int = 64 * 1024
    llm_base_url: str = ""
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = "default"
    llm_timeout_s: float = 120.0
    llm_max_retries: int = 4
    llm_max_concurrency: int = 4
    llm_penalty_window: int = 0
    local_llm: str = "qwen"
    local_llm_parallel: int = 4
    local_llm_ctx: int = 8192
    local_llm_threads: int = 0
    catalog_dir: str = ""
    datasets_dir: str = ""
    path_roots: str = ""
    hub_offline: bool = False
    bertscore_hub_model: bool = False
    parser_addr: str = ""
    retriever_addr: str = ""
    generator_addr: str = ""
    trainer_addr: str = ""
    evaluator_addr: str = ""
    deployer_addr: str = ""
    gateway_token: str = field(default="", repr=False)
    max_running_runs: int = 2
    max_retrieved_rows: int = 2000
    choice_timeout_s: float = 900.0
    stage_patience_s: float = 300.0
    train_memory_gb: float = 0.0
    trainer_backend: str = "local-ray"
    deployer_backend: str = "local"
    serving_runtime: str = "auto"
    serving_precision: str = DEFAULT_SERVING_PRECISION
    k8s_namespace: str = "default"
    rayjob_template: Path = Path("/etc/p2m/templates/rayjob.yaml")
    inferenceservice_template: Path = Path("/etc/p2m/templates/inferenceservice.yaml")
    artifacts_pvc: str = ""
    image: str = ""
    k8s_poll_s: float = 2.0

    def __post_init__(self) -> None:
        """Make every path setting absolute, once, against the working folder of the start.

        Ray Train's storage, the subprocesses ``p2m up`` starts (with their own working
        folder) and the paths shown to a person all need one; a relative setting ("~" too)
        is resolved here so that no component ever sees it.
        """
        for name in _PATH_SETTINGS:
            object.__setattr__(self, name, Path(_absolute(str(getattr(self, name)))))
        for name in _OPTIONAL_PATH_SETTINGS:
            value = getattr(self, name)
            object.__setattr__(self, name, _absolute(value) if value.strip() else "")
        if self.local_llm.endswith(".gguf") or os.sep in self.local_llm:  # a file, not a name
            object.__setattr__(self, "local_llm", _absolute(self.local_llm))
        roots = [_absolute(root) for root in self.path_roots.split(os.pathsep) if root.strip()]
        object.__setattr__(self, "path_roots", os.pathsep.join(roots))

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings: defaults, then ``P2M_*`` environment, then non-None ``overrides``.

        Raises:
            InvalidInput: A value has the wrong type or is out of range (the field is named).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        for secret in SECRETS:
            secret_file = env.get(f"{ENV_PREFIX}{secret.upper()}_FILE")
            if secret_file and secret not in values:
                values[secret] = _read_secret(secret, secret_file)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = _coerce(name, _field_type(cls, name), value)
        settings = cls(**values)
        settings.validate()
        return settings

    # -- what follows from the settings: one place for each --------------------------------

    @property
    def artifacts_dir(self) -> Path:
        """The content-addressed artifact store."""
        return self.data_dir / "artifacts"

    @property
    def models_dir(self) -> Path:
        """The local model store (base models usable offline, assembled GGUF files)."""
        return self.data_dir / "models"

    @property
    def runs_db(self) -> Path:
        """The gateway's run store."""
        return self.data_dir / "runs" / "runs.sqlite"

    @property
    def deployments_dir(self) -> Path:
        """The local deployer's records and logs."""
        return self.data_dir / "deployments"

    @property
    def logs_dir(self) -> Path:
        """The logs of the services ``p2m up`` starts."""
        return self.data_dir / "logs"

    def cache_dir(self, stage: str) -> Path:
        """A stage's working folder (journals, checkpoints, indexes): kept across restarts."""
        return self.data_dir / "cache" / stage

    @property
    def teacher_model(self) -> str:
        """The teacher's name: the configured endpoint's model, else the embedded one."""
        return self.llm_model if self.llm_base_url else self.local_llm

    @property
    def offline(self) -> bool:
        """Whether the hub is out of reach: by setting, or by the hub client's HF_HUB_OFFLINE."""
        return self.hub_offline or hub_offline_by_env()

    def as_environ(self) -> dict[str, str]:
        """The ``P2M_*`` variables that give another process these settings (defaults left out).

        ``p2m up`` starts each service with them, so a setting given to ``up`` as a flag or an
        override reaches the services as it would from the environment. Secrets are left out:
        they reach a child as they reached this process (``P2M_<NAME>[_FILE]``).
        """
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRETS or value == _default_of(f):
                continue
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            env[ENV_PREFIX + f.name.upper()] = text
        return env

    def readable_roots(self) -> tuple[Path, ...]:
        """The folders a request may name paths in (data dir, datasets, catalog, path_roots)."""
        extra = [root for root in self.path_roots.split(os.pathsep) if root.strip()]
        named = [self.datasets_dir, self.catalog_dir, *extra]
        return (Path(self.data_dir), *(Path(root) for root in named if root))

    def validate(self) -> None:
        """Check ranges and formats, naming the offending field.

        Raises:
            InvalidInput: A value is out of range or malformed.
        """
        if not 0 <= self.port <= 65535:
            raise InvalidInput("port", f"must be within 0..65535, got {self.port}")
        if self.log_format not in LOG_FORMATS:
            raise InvalidInput("log_format", f"must be one of {LOG_FORMATS}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise InvalidInput("log_level", f"must be one of {LOG_LEVELS}")
        for name in (
            "llm_max_concurrency",
            "local_llm_parallel",
            "local_llm_ctx",
            "max_running_runs",
            "max_retrieved_rows",
        ):
            if getattr(self, name) < 1:
                raise InvalidInput(name, "must be at least 1")
        if self.llm_penalty_window < 0:
            raise InvalidInput("llm_penalty_window", "must not be negative")
        if self.llm_max_retries < 0 or self.llm_timeout_s <= 0 or self.grace_s < 0:
            raise InvalidInput("llm_timeout_s", "timeouts and retries must not be negative")
        self._validate_cluster()
        if self.llm_base_url:
            parsed = urlparse(self.llm_base_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise InvalidInput(
                    "llm_base_url", f"must be an http(s) URL, got {self.llm_base_url!r}"
                )

    def _validate_cluster(self) -> None:
        """Check the Kubernetes settings (used only with the rayjob and kserve backends)."""
        if self.trainer_backend not in TRAINER_BACKENDS:
            raise InvalidInput("trainer_backend", f"must be one of {TRAINER_BACKENDS}")
        if self.deployer_backend not in DEPLOYER_BACKENDS:
            raise InvalidInput("deployer_backend", f"must be one of {DEPLOYER_BACKENDS}")
        if self.serving_runtime not in SERVING_RUNTIMES:
            raise InvalidInput("serving_runtime", f"must be one of {SERVING_RUNTIMES}")
        if self.serving_precision not in SERVING_PRECISIONS:
            raise InvalidInput("serving_precision", f"must be one of {SERVING_PRECISIONS}")
        if not _DNS_LABEL.match(self.k8s_namespace):
            raise InvalidInput("k8s_namespace", f"not a namespace name: {self.k8s_namespace!r}")
        if self.artifacts_pvc and not _DNS_SUBDOMAIN.match(self.artifacts_pvc):
            raise InvalidInput("artifacts_pvc", f"not a claim name: {self.artifacts_pvc!r}")
        if any(c.isspace() for c in self.image):
            raise InvalidInput("image", f"not an image reference: {self.image!r}")
        if not 0 < self.k8s_poll_s <= 300:
            raise InvalidInput("k8s_poll_s", f"must be within (0, 300], got {self.k8s_poll_s}")


# Path settings made absolute when settings are built (Path fields; strings where "" = none).
_PATH_SETTINGS = ("data_dir", "rayjob_template", "inferenceservice_template")
_OPTIONAL_PATH_SETTINGS = ("catalog_dir", "datasets_dir")


def _absolute(path: str) -> str:
    """``path`` with "~" expanded, made absolute against the working folder and normalised."""
    return os.path.abspath(os.path.expanduser(path))


def _default_of(f: dataclasses.Field[Any]) -> Any:
    """A settings field's default, made absolute as ``__post_init__`` makes a path."""
    default = f.default
    if f.name in _PATH_SETTINGS:
        return Path(_absolute(str(default)))
    return default


def _field_type(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.type
    raise InvalidInput(name, "is not a known setting")


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        if kind == "Path":
            return Path(raw)
        return str(raw)
    except ValueError as exc:
        raise InvalidInput(name, f"expected {kind}, got {raw!r}") from exc


def _read_secret(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(f"{name}_file", f"cannot read {path}: {exc.strerror}") from exc
