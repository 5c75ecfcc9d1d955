"""Contract test with the Ansible ``kubernetes.core`` 6.2 modules, run by ``ansible-playbook`` on localhost."""

from __future__ import annotations

import json

import yaml

from tests.kube.harness import ANSIBLE_PLAYBOOK, FIXTURES, KubeServer

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "ollama", "namespace": "ml", "labels": {"app.kubernetes.io/part-of": "home-lab"}},
    "spec": {
        "replicas": 1,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": {"app": "ollama"}},
        "template": {
            "metadata": {"labels": {"app": "ollama", "app.kubernetes.io/part-of": "home-lab"}},
            "spec": {
                "containers": [
                    {
                        "name": "ollama",
                        "image": "ollama/ollama:0.5.7",
                        "env": [{"name": "OLLAMA_KEEP_ALIVE", "value": "-1"}],
                        "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                    }
                ]
            },
        },
    },
}


def _playbook(results: str) -> list[dict]:
    k8s = "kubernetes.core."
    tasks = [
        {
            "name": "namespace",
            k8s + "k8s": {
                "state": "present",
                "definition": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}},
            },
            "register": "ns",
        },
        {
            "name": "check mode uses server-side dry run",
            k8s + "k8s": {"state": "present", "definition": DEPLOYMENT},
            "check_mode": True,
            "register": "dry",
        },
        {
            "name": "deployment (apply) and wait",
            k8s + "k8s": {
                "state": "present",
                "apply": True,
                "wait": True,
                "wait_timeout": 30,
                "definition": DEPLOYMENT,
            },
            "register": "created",
        },
        {
            "name": "apply again is idempotent",
            k8s + "k8s": {"state": "present", "apply": True, "definition": DEPLOYMENT},
            "register": "again",
        },
        {
            "name": "strategic merge patch of the env",
            k8s + "k8s": {
                "state": "patched",
                "kind": "Deployment",
                "namespace": "ml",
                "name": "ollama",
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
                "wait_timeout": 30,
            },
            "register": "patched",
        },
        {
            "name": "info by label",
            k8s + "k8s_info": {
                "kind": "Deployment",
                "namespace": "ml",
                "label_selectors": ["app.kubernetes.io/part-of=home-lab"],
                "wait": True,
                "wait_condition": {"type": "Available", "status": "True"},
                "wait_timeout": 30,
            },
            "register": "info",
        },
        {
            "name": "running pods by field",
            k8s + "k8s_info": {
                "kind": "Pod",
                "namespace": "ml",
                "label_selectors": ["app=ollama"],
                "field_selectors": ["status.phase=Running"],
            },
            "register": "pods",
        },
        {
            "name": "scale to 2 and wait",
            k8s + "k8s_scale": {
                "kind": "Deployment",
                "namespace": "ml",
                "name": "ollama",
                "replicas": 2,
                "wait": True,
                "wait_timeout": 30,
            },
            "register": "scaled",
        },
        {
            "name": "drain a worker",
            k8s + "k8s_drain": {
                "name": "k3s-worker-01",
                "state": "drain",
                "delete_options": {
                    "ignore_daemonsets": True,
                    "delete_emptydir_data": True,
                    "wait_timeout": 30,
                    "wait_sleep": 1,
                },
            },
            "register": "drained",
        },
        {
            "name": "node after drain",
            k8s + "k8s_info": {"kind": "Node", "name": "k3s-worker-01"},
            "register": "cordoned",
        },
        {"name": "uncordon", k8s + "k8s_drain": {"name": "k3s-worker-01", "state": "uncordon"}},
        {
            "name": "helm install",
            k8s + "helm": {
                "name": "demo",
                "chart_ref": str(FIXTURES / "demo-chart"),
                "release_namespace": "ml",
                "wait": True,
                "timeout": "60s",
                "values": {"replicas": 2},
            },
            "register": "helm_install",
        },
        {"name": "helm info", k8s + "helm_info": {"name": "demo", "release_namespace": "ml"}, "register": "helm_info"},
        {
            "name": "delete and wait",
            k8s + "k8s": {
                "state": "absent",
                "kind": "Deployment",
                "namespace": "ml",
                "name": "ollama",
                "wait": True,
                "wait_timeout": 30,
            },
            "register": "deleted",
        },
        {
            "name": "record",
            "ansible.builtin.copy": {
                "dest": results,
                "content": "{{ {'ns': ns, 'dry': dry, "
                "'created': created, 'again': again, 'patched': patched, 'info': info, 'pods': pods, 'scaled': scaled, "
                "'drained': drained, 'cordoned': cordoned, 'helm_install': helm_install, 'helm_info': helm_info, "
                "'deleted': deleted} | to_json }}",
            },
        },
    ]
    for task in tasks:
        for module, args in task.items():
            # kubernetes.core polls every wait_sleep seconds (default 5); the twin is faster than that
            if module.startswith(k8s) and module != k8s + "helm" and isinstance(args, dict) and args.get("wait"):
                args["wait_sleep"] = 1
    return [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]


def test_kubernetes_core_modules(fresh_server: KubeServer):
    k = fresh_server
    results = k.workdir / "results.json"
    playbook = k.workdir / "playbook.yml"
    playbook.write_text(yaml.safe_dump(_playbook(str(results)), sort_keys=False))
    proc = k.run(
        ANSIBLE_PLAYBOOK,
        "-i",
        "localhost,",
        str(playbook),
        "-e",
        "ansible_python_interpreter={{ ansible_playbook_python }}",
        timeout=180,
    )
    assert "failed=0" in proc.stdout
    r = json.loads(results.read_text())

    assert r["ns"]["changed"] and r["dry"]["changed"]
    assert r["created"]["changed"] and not r["again"]["changed"]
    assert r["patched"]["changed"]
    env = r["patched"]["result"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "OLLAMA_KEEP_ALIVE", "value": "-1"}, {"name": "OLLAMA_LOAD_TIMEOUT", "value": "10m"}]
    assert [d["metadata"]["name"] for d in r["info"]["resources"]] == ["ollama"]
    assert len(r["pods"]["resources"]) == 1
    assert r["scaled"]["result"]["status"]["readyReplicas"] == 2
    assert "marked unschedulable" in r["drained"]["result"]
    assert r["cordoned"]["resources"][0]["spec"]["unschedulable"] is True
    assert r["helm_install"]["status"]["status"] == "deployed"
    assert r["helm_info"]["status"]["status"] == "deployed"
    assert r["deleted"]["changed"]

    assert k.call(k.cluster.get, "apps/v1", "Deployment", "ml", "ollama") is None
    node = k.call(k.cluster.get, "v1", "Node", None, "k3s-worker-01")
    assert not node["spec"].get("unschedulable")
    assert k.call(k.cluster.get, "apps/v1", "Deployment", "ml", "demo")["status"]["readyReplicas"] == 2
