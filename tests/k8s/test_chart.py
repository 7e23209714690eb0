"""The Helm chart: linted, rendered for every values file, every object schema-valid, and the
values that change the rendering checked case by case ("should ... when ...").

helm-unittest cannot be had here, so these assert on ``helm template`` output in pytest.
"""

from __future__ import annotations

import subprocess
import textwrap
from typing import Any

import pytest

from tests.k8s.chart import (
    CHART,
    CI_VALUES,
    COMPONENT,
    GRPC_SERVICES,
    STATELESS,
    Rendered,
    containers,
    labels,
    mounts,
    pod_spec,
    pod_specs,
    volumes,
)
from tests.k8s.conftest import NAMESPACE, RenderFn, helm_template
from tests.k8s.schemas import validate_all

VALUES_FILES = [None, *CI_VALUES]  # None: the default values
IDS = ["default", *(v.removeprefix("ci/").removesuffix("-values.yaml") for v in CI_VALUES)]
PREFIX = "p2m-prompt2model"


def _render(render: RenderFn, values: str | None, **set_values: Any) -> Rendered:
    return render(*([values] if values else []), **set_values)


# --- lint and schemas -----------------------------------------------------------------------


def test_should_have_a_ci_values_file_for_each_rendering_variant():
    assert CI_VALUES == [
        "ci/auth-values.yaml",
        "ci/cpu-values.yaml",
        "ci/external-llm-values.yaml",
        "ci/gpu-values.yaml",
    ]


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_should_pass_helm_lint_strict_when_using_each_values_file(helm: str, values: str | None):
    args = [helm, "lint", "--strict", str(CHART), *(["-f", str(CHART / values)] if values else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_should_render_only_schema_valid_objects_when_using_each_values_file(
    render: RenderFn, values: str | None, shared_data: Any
):
    rendered = _render(render, values)
    validate_all(rendered.all_objects())  # Kubernetes 1.30 and the newest; the CRDs


def test_should_render_only_schema_valid_objects_when_backends_are_local(
    render: RenderFn, shared_data: Any
):
    validate_all(render(kuberay__enabled=False, kserve__enabled=False).all_objects())


@pytest.mark.parametrize(("kube_version", "ok"), [("1.30.0", True), ("1.29.9", False)])
def test_should_render_only_when_the_cluster_is_a_supported_kubernetes_version(
    helm: str, kube_version: str, ok: bool
):
    args = [helm, "template", "p2m", str(CHART), "--kube-version", kube_version]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert (result.returncode == 0) is ok, result.stderr


def test_should_reject_a_misspelt_values_key_when_rendering(helm: str):
    result = helm_template(helm, check=False, parser__replicass=2)
    assert result.returncode != 0
    assert "replicass" in result.stderr


def test_should_reject_a_wrongly_typed_value_when_rendering(helm: str):
    result = helm_template(helm, check=False, gateway__port="grpc")
    assert result.returncode != 0
    assert "/gateway/port" in result.stderr


# --- LLM endpoint ---------------------------------------------------------------------------


def test_should_render_no_llm_deployment_when_llm_enabled_is_false(render: RenderFn):
    rendered = render("ci/external-llm-values.yaml")
    assert rendered.find("Deployment", "llm") is None
    assert rendered.find("Service", "llm") is None
    for component in ("parser", "retriever", "generator", "evaluator"):
        env = rendered.env(component)
        assert env["P2M_LLM_BASE_URL"] == "https://api.openai.com/v1"
        assert env["P2M_LLM_MODEL"] == "gpt-4o-mini"
        assert "P2M_LLM_PENALTY_WINDOW" not in env  # an OpenAI endpoint rejects repeat_last_n


def test_should_point_every_llm_caller_at_the_in_cluster_endpoint_when_llm_is_enabled(
    render: RenderFn,
):
    rendered = render()
    service = rendered.get("Service", "llm")
    url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:8080/v1"
    for component in ("parser", "retriever", "generator", "evaluator"):
        assert rendered.env(component)["P2M_LLM_BASE_URL"] == url
        assert "P2M_LLM_API_KEY_FILE" not in rendered.env(component)  # no key: none mounted
    for component in ("gateway", "trainer", "deployer"):
        assert "P2M_LLM_BASE_URL" not in rendered.env(component)


def test_should_mount_the_llm_key_secret_as_a_file_when_an_external_endpoint_has_a_key(
    render: RenderFn,
):
    rendered = render("ci/external-llm-values.yaml")
    for component in ("parser", "retriever", "generator", "evaluator"):
        key_file = rendered.env(component)["P2M_LLM_API_KEY_FILE"]
        pod = pod_spec(rendered.deployment(component))
        folder, _, name = key_file.rpartition("/")
        volume = volumes(pod)[mounts(pod["containers"][0])[folder]]
        assert volume["secret"]["secretName"] == "p2m-llm"  # the existing Secret, not a copy
        assert volume["secret"]["items"] == [{"key": "api-key", "path": name}]
    assert rendered.of_kind("Secret") == []


def test_should_store_the_llm_key_in_the_chart_secret_when_given_as_a_value(render: RenderFn):
    rendered = render(
        "ci/external-llm-values.yaml", llm__apiKey__existingSecret="", llm__apiKey__value="sk-test"
    )
    (secret,) = rendered.of_kind("Secret")
    assert set(secret["data"]) == {"api-key"}
    volume = volumes(pod_spec(rendered.deployment("parser")))["llm-api-key"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_should_fail_when_llm_is_disabled_without_a_base_url(helm: str):
    result = helm_template(helm, check=False, llm__enabled=False)
    assert result.returncode != 0
    assert "baseUrl" in result.stderr


def test_should_serve_vllm_on_a_gpu_when_llm_engine_is_vllm(render: RenderFn):
    rendered = render("ci/gpu-values.yaml")
    container = rendered.container("llm")
    assert container["image"].startswith("vllm/vllm-openai:")
    assert container["command"] == ["vllm", "serve"]
    assert container["args"][:3] == [
        "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name",
        "qwen2.5-7b-instruct",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert mounts(container)["/dev/shm"] == "dshm"
    assert rendered.env("parser")["P2M_LLM_MODEL"] == "qwen2.5-7b-instruct"
    assert "P2M_LLM_PENALTY_WINDOW" not in rendered.env("generator")


def test_should_run_the_shipped_llama_cpp_model_when_llm_engine_is_llamacpp(render: RenderFn):
    rendered = render("ci/cpu-values.yaml")
    container = rendered.container("llm")
    assert container["args"] == ["serve", "llm", "--port", "8080"]
    assert rendered.env("llm")["P2M_LOCAL_LLM"] == "smollm2"
    # llama.cpp's repetition penalties look 64 tokens back unless its callers say otherwise.
    assert rendered.env("generator")["P2M_LLM_PENALTY_WINDOW"] == "256"
    assert "nvidia.com/gpu" not in str(container["resources"])


# --- auth -----------------------------------------------------------------------------------


def test_should_mount_the_token_secret_when_auth_is_on(render: RenderFn):
    rendered = render("ci/auth-values.yaml")
    (secret,) = rendered.of_kind("Secret")
    assert set(secret["data"]) == {"gateway-token"}
    env = rendered.env("gateway")
    assert env["P2M_GATEWAY_TOKEN_FILE"] == "/etc/p2m/secrets/gateway/token"
    pod = pod_spec(rendered.deployment("gateway"))
    volume = volumes(pod)[mounts(pod["containers"][0])["/etc/p2m/secrets/gateway"]]
    assert volume["secret"] == {
        "secretName": secret["metadata"]["name"],
        "defaultMode": 0o440,
        "items": [{"key": "gateway-token", "path": "token"}],
    }
    for component in GRPC_SERVICES[1:]:  # nobody else sees the token
        assert "P2M_GATEWAY_TOKEN_FILE" not in rendered.env(component)
        assert "gateway-token" not in volumes(pod_spec(rendered.deployment(component)))


def test_should_use_the_existing_token_secret_when_auth_existing_secret_is_set(
    render: RenderFn,
):
    rendered = render("ci/auth-values.yaml", auth__token="", auth__existingSecret="my-token")
    assert rendered.of_kind("Secret") == []
    volume = volumes(pod_spec(rendered.deployment("gateway")))["gateway-token"]
    assert volume["secret"]["secretName"] == "my-token"


def test_should_mount_no_token_when_auth_is_off(render: RenderFn):
    rendered = render()
    assert "P2M_GATEWAY_TOKEN_FILE" not in rendered.env("gateway")
    assert rendered.of_kind("Secret") == []


def test_should_fail_when_auth_is_on_without_a_token(helm: str):
    result = helm_template(helm, check=False, auth__enabled=True)
    assert result.returncode != 0
    assert "token" in result.stderr


# --- GPUs -------------------------------------------------------------------------------------


def test_should_request_nvidia_gpus_for_ray_workers_when_gpu_values(render: RenderFn):
    rendered = render("ci/gpu-values.yaml")
    rayjob, isvc = rendered.workload_templates()
    cluster = rayjob["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    worker_pod = workers["template"]["spec"]
    (worker,) = worker_pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert worker["image"] == "prompt2model-gpu:0.1.0"
    assert worker_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert worker_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert worker_pod["priorityClassName"] == "prompt2model-training"
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(head["containers"][0]["resources"])
    assert "nodeSelector" not in head  # the head needs no GPU node
    predictor = isvc["spec"]["predictor"]
    assert predictor["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["containers"][0]["image"] == "prompt2model-gpu:0.1.0"
    for component in ("trainer", "deployer"):
        assert rendered.env(component)["P2M_IMAGE"] == "prompt2model-gpu:0.1.0"


@pytest.mark.parametrize("values", [None, "ci/cpu-values.yaml"], ids=["default", "cpu"])
def test_should_request_no_gpus_anywhere_when_gpu_is_off(render: RenderFn, values: str | None):
    rendered = _render(render, values)
    assert "nvidia.com/gpu" not in str(rendered.all_objects())
    assert rendered.env("trainer")["P2M_IMAGE"] == "prompt2model:0.1.0"


def test_should_fail_when_gpus_are_requested_without_the_gpu_image(helm: str):
    result = helm_template(helm, check=False, trainer__rayJob__worker__gpus=1)
    assert result.returncode != 0
    assert "gpu.enabled" in result.stderr


# --- security ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_should_run_every_container_as_non_root_with_a_read_only_root_filesystem_and_no_capabilities(  # noqa: E501
    render: RenderFn, values: str | None
):
    rendered = _render(render, values)
    pods = [pod for obj in rendered.all_objects() for pod in pod_specs(obj)]
    assert len(pods) >= 8
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(pod):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            # a read-only root needs a writable /tmp (HOME, HF_HOME, XDG_CACHE_HOME)
            assert volumes(pod)[mounts(container)["/tmp"]]["emptyDir"], where
            assert container.get("resources"), where


def test_should_point_home_and_caches_under_tmp_when_the_root_filesystem_is_read_only(
    render: RenderFn,
):
    rendered = render()
    for component in (*GRPC_SERVICES, "llm"):
        env = rendered.env(component)
        assert env["HOME"] == "/tmp"
        assert env["HF_HOME"].startswith("/tmp/")
        assert env["XDG_CACHE_HOME"].startswith("/tmp/")


# --- network ----------------------------------------------------------------------------------


def _selects(policy: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if any(pod_labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In"
        if pod_labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("values", [None, "ci/auth-values.yaml"], ids=["default", "auth"])
def test_should_make_only_the_gateway_reachable_from_outside_the_release(
    render: RenderFn, values: str | None
):
    rendered = _render(render, values)
    policies = rendered.of_kind("NetworkPolicy")
    release = {"app.kubernetes.io/name": "prompt2model", "app.kubernetes.io/instance": "p2m"}
    deployments = rendered.of_kind("Deployment")
    assert len(deployments) == 8
    for deployment in deployments:
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selecting = [p for p in policies if _selects(p, pod_labels)]
        assert selecting, f"no NetworkPolicy selects {pod_labels[COMPONENT]}"
        rules = [rule for p in selecting for rule in p["spec"].get("ingress", [])]
        peers = [peer for rule in rules for peer in rule.get("from", [])]
        if pod_labels[COMPONENT] == "gateway":
            if values is None:  # open to anyone, on the gRPC port only
                assert any("from" not in rule for rule in rules)
                assert all(rule["ports"] == [{"port": "grpc", "protocol": "TCP"}] for rule in rules)
            else:  # networkPolicy.gatewayFrom
                assert peers == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
        else:  # only the release's own pods, never another namespace or address
            assert all("from" in rule for rule in rules)
            assert peers
            assert all(peer == {"podSelector": {"matchLabels": release}} for peer in peers)


def test_should_render_no_network_policies_when_network_policy_is_disabled(render: RenderFn):
    assert render(networkPolicy__enabled=False).of_kind("NetworkPolicy") == []


@pytest.mark.parametrize(
    ("values", "service_type"),
    [(None, "ClusterIP"), ("ci/auth-values.yaml", "LoadBalancer")],
    ids=["default", "auth"],
)
def test_should_set_the_gateway_service_type_from_values(
    render: RenderFn, values: str | None, service_type: str
):
    rendered = _render(render, values)
    gateway = rendered.get("Service", "gateway")
    assert gateway["spec"]["type"] == service_type
    assert gateway["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 50050,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    for component in GRPC_SERVICES[1:]:
        assert rendered.get("Service", component)["spec"]["type"] == "ClusterIP"


def test_should_give_the_gateway_the_address_of_every_stage_when_all_are_enabled(
    render: RenderFn,
):
    rendered = render()
    env = rendered.env("gateway")
    for component in GRPC_SERVICES[1:]:
        service = rendered.get("Service", component)
        port = service["spec"]["ports"][0]["port"]
        expected = f"{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
        assert env[f"P2M_{component.upper()}_ADDR"] == expected
    assert env["P2M_MAX_RUNNING_RUNS"] == "2"


def test_should_omit_a_stage_address_when_that_service_is_disabled(render: RenderFn):
    rendered = render(retriever__enabled=False)
    assert rendered.find("Deployment", "retriever") is None
    assert "P2M_RETRIEVER_ADDR" not in rendered.env("gateway")


# --- RBAC and cluster backends ----------------------------------------------------------------

CREATES = {"trainer": ("ray.io", "rayjobs"), "deployer": ("serving.kserve.io", "inferenceservices")}
READ_ONLY = {"get", "list", "watch"}


def test_should_give_the_trainer_and_deployer_a_service_account_whose_role_allows_only_rayjobs_and_inferenceservices(  # noqa: E501
    render: RenderFn,
):
    rendered = render()
    for component, (group, resource) in CREATES.items():
        pod = pod_spec(rendered.deployment(component))
        account = pod["serviceAccountName"]
        assert pod["automountServiceAccountToken"] is True
        binding = rendered.get("RoleBinding", component)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        role = rendered.named("Role", binding["roleRef"]["name"])
        assert binding["roleRef"]["kind"] == "Role"  # namespaced, never a ClusterRole
        writes = [r for r in role["rules"] if set(r["verbs"]) - READ_ONLY]
        assert writes == [
            {
                "apiGroups": [group],
                "resources": [resource],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ]
        reads = [r for r in role["rules"] if not set(r["verbs"]) - READ_ONLY]
        assert {(g, res) for r in reads for g in r["apiGroups"] for res in r["resources"]} == {
            (group, f"{resource}/status"),
            ("", "pods"),
            ("", "pods/log"),
            ("", "events"),
        }
    assert rendered.of_kind("ClusterRole") == [] and rendered.of_kind("ClusterRoleBinding") == []
    assert len(rendered.of_kind("Role")) == 2


def test_should_mount_no_api_token_in_other_pods_when_they_need_no_api(render: RenderFn):
    rendered = render()
    bound = {b["subjects"][0]["name"] for b in rendered.of_kind("RoleBinding")}
    for deployment in rendered.of_kind("Deployment"):
        if labels(deployment)[COMPONENT] in CREATES:
            continue
        pod = pod_spec(deployment)
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] not in bound
    rayjob, isvc = rendered.workload_templates()
    for _, pod in (*pod_specs(rayjob), *pod_specs(isvc)):
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] not in bound
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_should_set_the_cluster_backend_environment_when_kuberay_and_kserve_are_present(
    render: RenderFn,
):
    rendered = render()
    claim = rendered.of_kind("PersistentVolumeClaim")[0]["metadata"]["name"]
    expected = {
        "trainer": {
            "P2M_TRAINER_BACKEND": "rayjob",
            "P2M_RAYJOB_TEMPLATE": "/etc/p2m/templates/rayjob.yaml",
            "P2M_TRAIN_MEMORY_GB": "17.179869184",  # a worker's limit, 16Gi: full or LoRA
        },
        "deployer": {
            "P2M_DEPLOYER_BACKEND": "kserve",
            "P2M_INFERENCESERVICE_TEMPLATE": "/etc/p2m/templates/inferenceservice.yaml",
        },
    }
    for component, own in expected.items():
        env = rendered.env(component)
        for name, value in own.items():
            assert env[name] == value
        assert env["P2M_K8S_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["P2M_ARTIFACTS_PVC"] == claim
        assert env["P2M_IMAGE"] == "prompt2model:0.1.0"
        pod = pod_spec(rendered.deployment(component))
        volume = volumes(pod)[mounts(pod["containers"][0])["/etc/p2m/templates"]]
        configmap = rendered.named("ConfigMap", volume["configMap"]["name"])
        assert set(configmap["data"]) == {"rayjob.yaml", "inferenceservice.yaml"}


def test_should_give_the_evaluator_the_deployers_serving_runtime_and_precision(
    render: RenderFn,
):
    for runtime, precision in (("auto", "q8_0"), ("transformers", "f32")):  # defaults, and set
        set_ = runtime != "auto"
        rendered = (
            render(deployer__runtime=runtime, deployer__precision=precision) if set_ else render()
        )
        for component in ("deployer", "evaluator"):  # the evaluator scores what is served
            assert rendered.env(component)["P2M_SERVING_RUNTIME"] == runtime
            assert rendered.env(component)["P2M_SERVING_PRECISION"] == precision


def test_should_run_ray_in_the_trainer_pod_with_a_memory_dev_shm_when_backend_is_local_ray(
    render: RenderFn,
):
    rendered = render(kuberay__enabled=False, kserve__enabled=False)
    assert rendered.env("trainer")["P2M_TRAINER_BACKEND"] == "local-ray"
    assert "P2M_TRAIN_MEMORY_GB" not in rendered.env("trainer")  # it measures its own pod
    assert rendered.env("deployer")["P2M_DEPLOYER_BACKEND"] == "local"
    pod = pod_spec(rendered.deployment("trainer"))
    shm = volumes(pod)[mounts(pod["containers"][0])["/dev/shm"]]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert pod["automountServiceAccountToken"] is False  # no API needed
    assert rendered.of_kind("Role") == [] and rendered.of_kind("RoleBinding") == []


@pytest.mark.parametrize(
    ("limit", "gb"),
    [
        ("8000Mi", "8.388608"),
        ("12G", "12"),
        ("2500M", "2.5"),
        ("3e9", "3"),
        ("1Ti", "1099.511627776"),
        ("2T", "2000"),
        ("16777216Ki", "17.179869184"),
        ("16000000k", "16"),
        ("1Pi", "1.125899906842624e+06"),  # read by Python float() as the setting is
    ],
)
def test_should_tell_the_trainer_a_rayjob_workers_memory_in_gb(
    render: RenderFn, limit: str, gb: str
):
    rendered = render(trainer__rayJob__worker__resources__limits__memory=limit)
    assert rendered.env("trainer")["P2M_TRAIN_MEMORY_GB"] == gb


@pytest.mark.parametrize("limit", ["16 Gi", "16GB", "lots", "500m"])
def test_should_fail_naming_the_value_when_a_workers_memory_is_no_quantity(helm: str, limit: str):
    result = helm_template(
        helm, check=False, trainer__rayJob__worker__resources__limits__memory=limit
    )
    assert result.returncode != 0
    assert f'"{limit}" is not a memory quantity' in result.stderr


def test_should_give_the_trainer_no_dev_shm_when_backend_is_rayjob(render: RenderFn):
    container = render().container("trainer")
    assert "/dev/shm" not in mounts(container)


def test_should_follow_the_explicit_backend_when_trainer_backend_is_set(render: RenderFn):
    rendered = render(trainer__backend="local-ray")
    assert rendered.env("trainer")["P2M_TRAINER_BACKEND"] == "local-ray"
    assert {labels(r)[COMPONENT] for r in rendered.of_kind("Role")} == {"deployer"}


# --- workload templates -----------------------------------------------------------------------


def test_should_render_complete_workload_templates_with_placeholders_when_default(
    render: RenderFn, shared_data: Any
):
    rendered = render()
    rayjob, isvc = rendered.workload_templates()
    validate_all([rayjob, isvc])
    claim = rendered.of_kind("PersistentVolumeClaim")[0]["metadata"]["name"]
    # RayJob: placeholders the trainer replaces, values the chart fills
    assert rayjob["metadata"]["name"] == "placeholder"
    assert rayjob["spec"]["entrypoint"] == "p2m train-job --job placeholder"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True
    assert rayjob["spec"]["ttlSecondsAfterFinished"] == 600
    (workers,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (2, 2, 2)
    # InferenceService: autoscaling defaults
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["name"] == "placeholder"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 4)
    assert predictor["containers"][0]["args"][:3] == [
        "serve-model",
        "--model",
        "/data/models/placeholder",
    ]
    # the artifacts claim at the data dir in the head, the workers and the predictor
    for where, pod in (*pod_specs(rayjob), *pod_specs(isvc)):
        if where == "RayJob submitter":
            continue
        volume = volumes(pod)[mounts(pod["containers"][0])["/data"]]
        assert volume["persistentVolumeClaim"]["claimName"] == claim, where
        account = pod["serviceAccountName"]
        assert rendered.named("ServiceAccount", account), where


def test_should_set_the_autoscaling_of_the_predictor_from_values_when_cpu_values(
    render: RenderFn,
):
    _, isvc = render("ci/cpu-values.yaml").workload_templates()
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 80)
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 2)


# --- storage, autoscaling, probes -------------------------------------------------------------


def test_should_mount_the_artifacts_claim_at_the_data_dir_in_every_service_when_default(
    render: RenderFn,
):
    rendered = render()
    (claim,) = rendered.of_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for component in GRPC_SERVICES:
        pod = pod_spec(rendered.deployment(component))
        volume = volumes(pod)[mounts(pod["containers"][0])["/data"]]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert rendered.env(component)["P2M_DATA_DIR"] == "/data"


def test_should_use_the_existing_claim_when_persistence_existing_claim_is_set(
    render: RenderFn,
):
    rendered = render(persistence__existingClaim="shared-artifacts")
    assert rendered.of_kind("PersistentVolumeClaim") == []
    assert rendered.env("trainer")["P2M_ARTIFACTS_PVC"] == "shared-artifacts"
    rayjob, _ = rendered.workload_templates()
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert volumes(head)["data"]["persistentVolumeClaim"]["claimName"] == "shared-artifacts"


def test_should_set_the_storage_class_when_persistence_storage_class_is_set(render: RenderFn):
    (claim,) = render(persistence__storageClass="nfs-client").of_kind("PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "nfs-client"
    (claim,) = render(persistence__storageClass="-").of_kind("PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == ""


def test_should_point_the_retriever_at_the_catalog_on_the_volume_when_catalog_dir_is_set(
    render: RenderFn,
):
    assert render("ci/cpu-values.yaml").env("retriever")["P2M_CATALOG_DIR"] == "/data/catalogs"
    assert "P2M_CATALOG_DIR" not in render().env("retriever")


def test_should_create_an_hpa_for_each_stateless_service_when_autoscaling_is_enabled(
    render: RenderFn,
):
    rendered = render("ci/gpu-values.yaml")
    hpas = {labels(h)[COMPONENT]: h for h in rendered.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == set(STATELESS)
    for component, hpa in hpas.items():
        deployment = rendered.deployment(component)
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert hpas["generator"]["spec"]["minReplicas"] == 2


def test_should_render_no_hpa_when_autoscaling_is_disabled(render: RenderFn):
    rendered = render()
    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    for component in STATELESS:
        assert rendered.deployment(component)["spec"]["replicas"] == 1


def test_should_run_one_replica_with_recreate_when_a_service_keeps_state(render: RenderFn):
    rendered = render("ci/gpu-values.yaml")
    for component in ("gateway", "trainer", "deployer", "llm"):
        spec = rendered.deployment(component)["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}


def test_should_probe_grpc_services_over_grpc_and_the_llm_over_http(render: RenderFn):
    rendered = render()
    for component in GRPC_SERVICES:
        container = rendered.container(component)
        port = container["ports"][0]["containerPort"]
        assert container["args"] == ["serve", component, "--port", str(port)]
        assert rendered.env(component)["P2M_PORT"] == str(port)
        assert rendered.env(component)["P2M_HOST"] == "0.0.0.0"
        assert rendered.env(component)["P2M_LOG_FORMAT"] == "json"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (component, probe)
    llm = rendered.container("llm")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert llm[probe]["httpGet"] == {"path": "/health", "port": "http"}


def test_should_render_the_readme_example_values_when_installing_step_by_step(
    helm: str, tmp_path: Any, shared_data: Any
):
    readme = (CHART.parents[1] / "README.md").read_text()
    block = readme.split("# my-values.yaml\n", 1)[1].split("```", 1)[0]
    values = tmp_path / "my-values.yaml"
    values.write_text(textwrap.dedent(block))
    args = [helm, "template", "p2m", str(CHART), "--namespace", NAMESPACE, "-f", str(values)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = Rendered.parse(result.stdout)
    validate_all(rendered.all_objects())
    assert rendered.find("Deployment", "llm") is None
    assert (
        volumes(pod_spec(rendered.deployment("gateway")))["gateway-token"]["secret"]["secretName"]
        == "p2m-gateway"
    )
    rayjob, _ = rendered.workload_templates()
    (workers,) = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "memory": "32Gi",
        "nvidia.com/gpu": 1,
    }
