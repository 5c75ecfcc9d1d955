"""Contract test of the ``kubernetes.core`` 6.2 modules the roles use, run by ``ansible-playbook`` on localhost."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml

from tests.kube.kube_helpers import CHART, kjson, live_pods
from tests.twin import ANSIBLE_PLAYBOOK, ROOT, Twin

pytestmark = pytest.mark.slow

K8S = "kubernetes.core."
NODE = "k3s-worker-01"


def _deployment(namespace: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ollama", "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "home-lab"}},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "ollama"}},
            "template": {
                "metadata": {"labels": {"app": "ollama", "app.kubernetes.io/part-of": "home-lab"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "ollama",
                            "image": "ollama/ollama:0.5.7",
                            "env": [{"name": "OLLAMA_KEEP_ALIVE", "value": "-1"}],
                            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                        }
                    ],
                },
            },
        },
    }


def _configmap(namespace: str, data: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "consumer", "namespace": namespace},
        "data": data,
    }


def _tasks(namespace: str) -> list[dict]:
    """The module calls of the roles (litellm, llm_consumers, inference_rollback, lxc_capacity, helm_release)."""
    deployment = _deployment(namespace)
    restart = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}
    patched = {"kind": "Deployment", "api_version": "apps/v1", "namespace": namespace, "name": "ollama"}
    return [
        {
            "name": "namespace (exists already)",
            K8S + "k8s": {
                "state": "present",
                "definition": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            },
            "register": "ns",
        },
        {
            "name": "secret with base64 data",
            K8S + "k8s": {
                "state": "present",
                "definition": {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {"name": "master-key", "namespace": namespace},
                    "data": {"master-key": "{{ 'sk-1' | b64encode }}"},
                },
            },
            "register": "secret",
        },
        {
            "name": "configmap",
            K8S + "k8s": {"state": "present", "definition": _configmap(namespace, {"MODEL": "a", "KEEP": "1"})},
        },
        {
            "name": "configmap merge (llm_consumers)",
            K8S + "k8s": {
                "state": "present",
                "merge_type": "merge",
                "definition": _configmap(namespace, {"MODEL": "b"}),
            },
            "register": "merged",
        },
        {
            "name": "same merge again",
            K8S + "k8s": {
                "state": "present",
                "merge_type": "merge",
                "definition": _configmap(namespace, {"MODEL": "b"}),
            },
            "register": "merged_again",
        },
        {
            "name": "check mode uses a server-side dry run",
            K8S + "k8s": {"state": "present", "definition": deployment},
            "check_mode": True,
            "register": "dry",
        },
        {
            "name": "deployment (apply) and wait",
            K8S + "k8s": {
                "state": "present",
                "apply": True,
                "wait": True,
                "wait_timeout": 60,
                "definition": deployment,
            },
            "register": "created",
        },
        {
            "name": "apply again is idempotent",
            K8S + "k8s": {"state": "present", "apply": True, "definition": deployment},
            "register": "again",
        },
        {
            "name": "strategic merge patch of the env",
            K8S + "k8s": {
                "state": "patched",
                **patched,
                "definition": {
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": "ollama", "env": [{"name": "OLLAMA_LOAD_TIMEOUT", "value": "10m"}]}
                                ]
                            }
                        }
                    }
                },
                "wait": True,
                "wait_timeout": 60,
            },
            "register": "env_patched",
        },
        {
            "name": "roll the deployment (llm_consumers, inference_rollback)",
            K8S + "k8s": {"state": "patched", **patched, "definition": restart, "wait": True, "wait_timeout": 60},
            "register": "rolled",
        },
        {
            "name": "info by label, waiting for Available",
            K8S + "k8s_info": {
                "kind": "Deployment",
                "namespace": namespace,
                "label_selectors": ["app.kubernetes.io/part-of=home-lab"],
                "wait": True,
                "wait_condition": {"type": "Available", "status": "True"},
                "wait_timeout": 60,
            },
            "register": "info",
        },
        {
            "name": "running pods by field",
            K8S + "k8s_info": {
                "kind": "Pod",
                "namespace": namespace,
                "label_selectors": ["app=ollama"],
                "field_selectors": ["status.phase=Running"],
            },
            "register": "pods",
        },
        {
            "name": "scale to 2 and wait",
            K8S + "k8s_scale": {**patched, "replicas": 2, "wait": True, "wait_timeout": 60},
            "register": "scaled",
        },
        {
            "name": "scale to 0 and wait (the LiteLLM fallback drill)",
            K8S + "k8s_scale": {**patched, "replicas": 0, "wait": True, "wait_timeout": 60},
            "register": "scaled_down",
        },
        {
            "name": "running pods after scaling to 0",
            K8S + "k8s_info": {"kind": "Pod", "namespace": namespace, "label_selectors": ["app=ollama"]},
            "register": "no_pods",
        },
        {
            "name": "scale back to 1 and wait",
            K8S + "k8s_scale": {**patched, "replicas": 1, "wait": True, "wait_timeout": 60},
        },
        {
            "name": "drain the worker (lxc_capacity)",
            K8S + "k8s_drain": {
                "name": NODE,
                "state": "drain",
                "delete_options": {
                    "ignore_daemonsets": True,
                    "delete_emptydir_data": True,
                    "terminate_grace_period": 30,
                    "wait_timeout": 60,
                    "wait_sleep": 1,
                },
            },
            "register": "drained",
        },
        {
            "name": "node after drain",
            K8S + "k8s_info": {"kind": "Node", "name": NODE},
            "register": "cordoned",
        },
        {
            "name": "pods after drain",
            K8S + "k8s_info": {"kind": "Pod", "namespace": namespace, "label_selectors": ["app=ollama"]},
            "register": "drained_pods",
        },
        {"name": "uncordon", K8S + "k8s_drain": {"name": NODE, "state": "uncordon"}, "register": "uncordoned"},
        {
            "name": "helm install (helm_release)",
            K8S + "helm": {
                "name": "demo",
                "chart_ref": CHART,
                "release_namespace": namespace,
                "values": {"replicas": 2, "message": "from ansible"},
                "wait": True,
                "wait_timeout": "60s",
            },
            "register": "helm_install",
        },
        {
            "name": "helm again with the same values",
            K8S + "helm": {
                "name": "demo",
                "chart_ref": CHART,
                "release_namespace": namespace,
                "values": {"replicas": 2, "message": "from ansible"},
                "wait": True,
                "wait_timeout": "60s",
            },
            "register": "helm_again",
        },
        {
            "name": "helm info",
            K8S + "helm_info": {"release_name": "demo", "release_namespace": namespace},
            "register": "helm_info",
        },
        {
            "name": "configmap replaced (inference_rollback, force)",
            K8S + "k8s": {"state": "present", "force": True, "definition": _configmap(namespace, {"MODEL": "old"})},
            "register": "forced",
        },
        {
            "name": "configmap absent",
            K8S + "k8s": {
                "state": "absent",
                "api_version": "v1",
                "kind": "ConfigMap",
                "namespace": namespace,
                "name": "consumer",
            },
            "register": "cm_deleted",
        },
        {
            "name": "deployment absent and wait",
            K8S + "k8s": {
                "state": "absent",
                "kind": "Deployment",
                "namespace": namespace,
                "name": "ollama",
                "wait": True,
                "wait_timeout": 60,
            },
            "register": "deleted",
        },
    ]


RECORDED = (
    "ns secret merged merged_again dry created again env_patched rolled info pods scaled scaled_down no_pods "
    "drained cordoned drained_pods uncordoned helm_install helm_again helm_info forced cm_deleted deleted"
).split()


def _playbook(namespace: str, results: str) -> list[dict]:
    tasks = _tasks(namespace)
    for task in tasks:
        for module, args in task.items():
            # kubernetes.core polls every wait_sleep seconds (default 5); the twin is faster than that
            if module.startswith(K8S) and module != K8S + "helm" and isinstance(args, dict) and args.get("wait"):
                args["wait_sleep"] = 1
    record = "{{ {" + ", ".join(f"'{name}': {name}" for name in RECORDED) + "} | to_json }}"
    tasks.append({"name": "record", "ansible.builtin.copy": {"dest": results, "content": record}})
    return [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]


def test_kubernetes_core_modules(twin: Twin, namespace, tmp_path):
    results = tmp_path / "results.json"
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(yaml.safe_dump(_playbook(namespace, str(results)), sort_keys=False))
    env = dict(twin.env, K8S_AUTH_KUBECONFIG=twin.kubeconfig, ANSIBLE_NOCOLOR="1")
    try:
        proc = subprocess.run(
            [
                ANSIBLE_PLAYBOOK,
                "-i",
                "localhost,",
                str(playbook),
                "-e",
                "ansible_python_interpreter={{ ansible_playbook_python }}",
            ],
            cwd=ROOT,  # the repository's ansible.cfg, as the playbooks run
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        twin.kubectl("uncordon", NODE, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    r = json.loads(results.read_text())

    assert not r["ns"]["changed"]
    assert r["secret"]["changed"]
    secret = kjson(twin, "-n", namespace, "get", "secret", "master-key")
    assert base64.b64decode(secret["data"]["master-key"]) == b"sk-1"
    assert r["merged"]["changed"] and not r["merged_again"]["changed"]
    assert r["merged"]["result"]["data"] == {"MODEL": "b", "KEEP": "1"}

    assert r["dry"]["changed"] and r["created"]["changed"] and not r["again"]["changed"]
    env = r["env_patched"]["result"]["spec"]["template"]["spec"]["containers"][0]["env"]
    # strategic merge by name keeps the existing variable (the API server puts the patch's new one first)
    assert sorted(env, key=lambda e: e["name"]) == [
        {"name": "OLLAMA_KEEP_ALIVE", "value": "-1"},
        {"name": "OLLAMA_LOAD_TIMEOUT", "value": "10m"},
    ]
    assert r["rolled"]["changed"]
    annotations = r["rolled"]["result"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == "now"
    assert [d["metadata"]["name"] for d in r["info"]["resources"]] == ["ollama"]
    assert r["info"]["resources"][0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert len(r["pods"]["resources"]) == 1
    assert r["scaled"]["result"]["status"]["readyReplicas"] == 2
    assert r["scaled_down"]["changed"] and not r["scaled_down"]["result"]["spec"].get("replicas")
    assert r["no_pods"]["resources"] == []

    assert r["drained"]["changed"]
    assert "marked unschedulable" in r["drained"]["result"]
    assert r["cordoned"]["resources"][0]["spec"]["unschedulable"] is True
    # the Pod pinned to the drained node was evicted; its replacement waits for the uncordon
    assert all(
        p["spec"].get("nodeName") != NODE or p["metadata"].get("deletionTimestamp")
        for p in r["drained_pods"]["resources"]
    )
    assert r["uncordoned"]["changed"]

    assert r["helm_install"]["changed"] and r["helm_install"]["status"]["status"] == "deployed"
    assert not r["helm_again"]["changed"]
    assert r["helm_info"]["status"]["status"] == "deployed"
    assert r["helm_info"]["status"]["values"] == {"replicas": 2, "message": "from ansible"}
    assert kjson(twin, "-n", namespace, "get", "deploy", "demo")["status"]["readyReplicas"] == 2

    assert r["forced"]["changed"] and r["forced"]["result"]["data"] == {"MODEL": "old"}
    assert r["cm_deleted"]["changed"] and r["deleted"]["changed"]
    assert twin.kubectl("-n", namespace, "get", "deploy", "ollama", check=False).returncode == 1
    twin.wait_for(lambda: live_pods(twin, namespace, "app=ollama") == [], what="the garbage collector")
    assert not kjson(twin, "get", "node", NODE)["spec"].get("unschedulable")


def test_k8s_objects_info_reads_several_kinds_in_one_call(twin, namespace, module_runner):
    """homelab.inference.k8s_objects_info: each read as kubernetes.core.k8s_info gives it, in order, items kept."""
    from ansible_collections.homelab.inference.plugins.modules import k8s_objects_info

    twin.kubectl("-n", namespace, "create", "configmap", "consumer", "--from-literal=model=phi4-mini")
    args = {"kubeconfig": str(twin.kubeconfig)}
    objects = [
        {"kind": "Node"},
        {"kind": "ConfigMap", "namespace": namespace, "name": "consumer", "item": {"name": "paperless-ai"}},
        {"kind": "ConfigMap", "namespace": namespace, "name": "absent"},
        {"kind": "Deployment", "api_version": "apps/v1", "namespace": namespace},
        {"kind": "ConfigMap", "namespace": namespace, "label_selectors": ["no-such-label=x"]},
    ]
    result = module_runner(k8s_objects_info, dict(args, objects=objects), check_mode=True)
    assert not result.failed, result.get("msg")
    nodes, consumer, absent, deployments, selected = result["results"]
    assert NODE in [n["metadata"]["name"] for n in nodes["resources"]] and nodes["api_found"] is True
    assert consumer["resources"][0]["data"] == {"model": "phi4-mini"}
    assert consumer["item"] == {"name": "paperless-ai"} and absent["item"] is None
    assert absent["resources"] == [] and deployments["resources"] == [] and selected["resources"] == []
    assert consumer["object"]["name"] == "consumer" and consumer["object"]["kind"] == "ConfigMap"
    unknown = module_runner(k8s_objects_info, dict(args, objects=[{"kind": "NoSuchKind"}]))
    assert not unknown.failed and unknown["results"][0]["api_found"] is False
    bad = module_runner(k8s_objects_info, dict(args, objects=[{"name": "x"}]))
    assert bad.failed and "kind" in bad["msg"]
