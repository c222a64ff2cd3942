#!/usr/bin/env python3
"""Turn what `facekey-operator render` prints into the configuration a cluster would derive from
it, for the end-to-end alert test (tests/alerts/e2e.sh), with no Kubernetes at hand:

  prometheus    ServiceMonitor + Service + Deployment + PrometheusRule -> prometheus.yml and
                rules.yaml, as prometheus-operator generates them (one scrape job per endpoint,
                its relabelling, the rule groups), with service discovery replaced by one static
                target that carries the labels Kubernetes' endpoints discovery would attach;
                with --sidecar-target, the PodMonitor's job too, its pod discovery replaced by
                one injected application pod.
  alertmanager  AlertmanagerConfig (+ the Secret it references) -> alertmanager.yml, as
                prometheus-operator merges it into the Alertmanager configuration (namespaced
                receiver names, the injected `namespace` matcher, `continue: true`).
  runtime-env   Deployment + ConfigMap (+ Secret) -> the runtime's environment, as the kubelet
                builds it from `envFrom` and `env[].valueFrom.secretKeyRef`; with --mount-root,
                Secret volumes whose keys are given are written below it as the kubelet mounts
                them, and variables naming a path under their mount point follow them there.

Every test-only deviation from a cluster is a command-line option, named `--test-*`, and listed
in the output's header comment; nothing else is changed.

Reference: prometheus-operator, pkg/prometheus/promcfg.go (generateServiceMonitorConfig,
generatePodMonitorConfig) and
pkg/alertmanager/amcfg.go (AddAlertmanagerConfigs, convertRoute, namespaceEnforcer,
continueToNextRoute, makeNamespacedString).
Needs PyYAML (in .venv-tests).
"""

import argparse
import re
import sys
from pathlib import Path

import yaml


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def one(docs, kind, name=None):
    found = [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]
    if len(found) != 1:
        sys.exit(f"expected exactly one {kind} {name or ''} in the render, found {len(found)}")
    return found[0]


def sanitize(name):
    """Prometheus' label-name sanitising of Kubernetes label keys (`app.kubernetes.io/name` ->
    `app_kubernetes_io_name`), as the Kubernetes discovery does for `__meta_*_label_*`."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def secrets(pairs):
    """`--secret name/key=value` options (`=@path`: the file's content): the Secrets the objects
    reference."""
    out = {}
    for p in pairs or []:
        ref, _, value = p.partition("=")
        if value.startswith("@"):
            value = Path(value[1:]).read_text(encoding="utf-8")
        out[ref] = value
    return out


def secret_value(store, name, key):
    ref = f"{name}/{key}"
    if ref not in store:
        sys.exit(f"the render references Secret key {ref}: pass --secret {ref}=VALUE")
    return store[ref]


# --------------------------------------------------------------------------------- Prometheus


def discovered_target(address, service, deployment, pod, port_name):
    """The labels Kubernetes endpoints discovery attaches to one endpoint of `service` backed by
    `pod` (a pod of `deployment`): namespace, service name and labels, endpoint port name, the
    address' target (kind Pod), pod name, phase, labels and the container owning the port."""
    ns = service["metadata"]["namespace"]
    labels = {
        "__address__": address,
        "__meta_kubernetes_namespace": ns,
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port_name,
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod,
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_phase": "Running",
    }
    for k, v in (service["metadata"].get("labels") or {}).items():
        labels[f"__meta_kubernetes_service_label_{sanitize(k)}"] = v
        labels[f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"] = "true"
    template = deployment["spec"]["template"]
    for k, v in (template["metadata"].get("labels") or {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
    # The Service port's targetPort names a container port; that container is the endpoint's.
    svc_port = next(p for p in service["spec"]["ports"] if p.get("name") == port_name)
    for c in template["spec"]["containers"]:
        for cp in c.get("ports") or []:
            if cp.get("name") == svc_port.get("targetPort") or cp.get("containerPort") == svc_port.get("targetPort"):
                labels["__meta_kubernetes_pod_container_name"] = c["name"]
                labels["__meta_kubernetes_pod_container_port_name"] = cp.get("name", "")
    return labels


def service_monitor_relabelings(sm, index, endpoint):
    """prometheus-operator's relabel_configs for endpoint `index` of ServiceMonitor `sm`."""
    rl = [
        # Keep the original job name for the operator's own bookkeeping.
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
    ]
    # spec.selector.matchLabels: keep only endpoints of Services carrying every label.
    for k, v in sorted((sm["spec"]["selector"].get("matchLabels") or {}).items()):
        rl.append({
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_service_label_{sanitize(k)}",
                f"__meta_kubernetes_service_labelpresent_{sanitize(k)}",
            ],
            "regex": f"({v});true",
        })
    # endpoints[].port: keep only the endpoint port of that name.
    rl.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": endpoint["port"]})
    # The endpoint address' target: node or pod label.
    for kind, label in (("Node", "node"), ("Pod", "pod")):
        rl.append({
            "source_labels": ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"],
            "separator": ";",
            "regex": f"{kind};(.*)",
            "replacement": "${1}",
            "target_label": label,
        })
    # The standard target labels: namespace, service, pod, container.
    for src, target in (
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_service_name", "service"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
    ):
        rl.append({"source_labels": [src], "target_label": target})
    # spec.targetLabels / spec.podTargetLabels: copy Service / pod labels onto the target.
    for l in sm["spec"].get("targetLabels") or []:
        rl.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(l)}"], "target_label": sanitize(l), "regex": "(.+)", "replacement": "${1}"})
    for l in sm["spec"].get("podTargetLabels") or []:
        rl.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(l)}"], "target_label": sanitize(l), "regex": "(.+)", "replacement": "${1}"})
    # job: the Service name, or the value of the Service label named by spec.jobLabel.
    rl.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"})
    if sm["spec"].get("jobLabel"):
        rl.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(sm['spec']['jobLabel'])}"], "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    # endpoint: the port name.
    rl.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    # endpoints[].relabelings come last.
    rl.extend(endpoint.get("relabelings") or [])
    return rl


def sidecar_target(address, pm, pod, container):
    """The labels Kubernetes pod discovery attaches to the sidecar's metrics port in application
    pod `pod`: the pod labels the webhook sets (the PodMonitor's selector, which names the
    FaceKeyDeployment), the injected `container` (a native sidecar: an init container) and its
    port, named as the PodMonitor's endpoint."""
    port = pm["spec"]["podMetricsEndpoints"][0]["port"]
    labels = {
        "__address__": address,
        "__meta_kubernetes_namespace": pm["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_container_name": container,
        "__meta_kubernetes_pod_container_init": "true",
        "__meta_kubernetes_pod_container_port_name": port,
    }
    for k, v in (pm["spec"]["selector"].get("matchLabels") or {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    return labels


def pod_monitor_relabelings(pm, endpoint):
    """prometheus-operator's relabel_configs for an endpoint of PodMonitor `pm`
    (generatePodMonitorConfig): no Service, so no `service` label."""
    ns, name = pm["metadata"]["namespace"], pm["metadata"]["name"]
    rl = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    for k, v in sorted((pm["spec"]["selector"].get("matchLabels") or {}).items()):
        rl.append({
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_pod_label_{sanitize(k)}",
                f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}",
            ],
            "regex": f"({v});true",
        })
    rl.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"]})
    for src, target in (
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_container_name", "container"),
        ("__meta_kubernetes_pod_name", "pod"),
    ):
        rl.append({"source_labels": [src], "target_label": target})
    for l in pm["spec"].get("podTargetLabels") or []:
        rl.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(l)}"], "target_label": sanitize(l), "regex": "(.+)", "replacement": "${1}"})
    rl.append({"target_label": "job", "replacement": f"{ns}/{name}"})
    if pm["spec"].get("jobLabel"):
        rl.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(pm['spec']['jobLabel'])}"], "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    rl.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    rl.extend(endpoint.get("relabelings") or [])
    return rl


def prometheus(args):
    docs = load(args.rendered)
    sm = one(docs, "ServiceMonitor")
    rule = one(docs, "PrometheusRule")
    ns = sm["metadata"]["namespace"]
    # The ServiceMonitor's selector picks the Service (the relabelling below checks it again,
    # the way Prometheus would, against the Service's real labels).
    services = [
        d for d in docs
        if d.get("kind") == "Service" and d["metadata"]["namespace"] == ns
        and all((d["metadata"].get("labels") or {}).get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ]
    if len(services) != 1:
        sys.exit(f"the ServiceMonitor selects {len(services)} rendered Services, expected 1")
    service = services[0]
    # The Deployment whose pods the Service selects.
    deployment = next(
        d for d in docs
        if d.get("kind") == "Deployment" and all(
            d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items()
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    scrape_configs = []
    for i, ep in enumerate(sm["spec"]["endpoints"]):
        interval = ep.get("interval", "30s")
        if args.test_scrape_interval:
            notes.append(f"scrape interval {interval} -> {args.test_scrape_interval}")
            interval = args.test_scrape_interval
        scrape_configs.append({
            # prometheus-operator names the job serviceMonitor/<namespace>/<name>/<endpoint index>.
            "job_name": f"serviceMonitor/{ns}/{sm['metadata']['name']}/{i}",
            "honor_labels": bool(ep.get("honorLabels", False)),
            "scrape_interval": interval,
            "metrics_path": ep.get("path", "/metrics"),
            "scheme": ep.get("scheme", "http"),
            # Stands in for kubernetes_sd_configs (role endpoints, namespaces: [ns]).
            "static_configs": [{
                "targets": [args.target],
                "labels": {k: v for k, v in discovered_target(args.target, service, deployment, args.pod, ep["port"]).items() if k != "__address__"},
            }],
            "relabel_configs": service_monitor_relabelings(sm, i, ep),
        })
    if args.sidecar_target:
        # A PodMonitor's job; pod discovery (role pod) stands in as one static target.
        pm = one(docs, "PodMonitor")
        for i, ep in enumerate(pm["spec"]["podMetricsEndpoints"]):
            interval = args.test_scrape_interval or ep.get("interval", "30s")
            scrape_configs.append({
                "job_name": f"podMonitor/{ns}/{pm['metadata']['name']}/{i}",
                "honor_labels": bool(ep.get("honorLabels", False)),
                "scrape_interval": interval,
                "metrics_path": ep.get("path", "/metrics"),
                "scheme": ep.get("scheme", "http"),
                "static_configs": [{
                    "targets": [args.sidecar_target],
                    "labels": {k: v for k, v in sidecar_target(args.sidecar_target, pm, args.sidecar_pod, args.sidecar_container).items() if k != "__address__"},
                }],
                "relabel_configs": pod_monitor_relabelings(pm, ep),
            })
    # PrometheusRule: promtool/Prometheus read `{groups: spec.groups}`.
    groups = rule["spec"]["groups"]
    for spec in args.test_for or []:
        alert, _, dur = spec.partition("=")
        hits = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
        if not hits:
            sys.exit(f"--test-for: no alert {alert} in the rendered PrometheusRule")
        for r in hits:
            notes.append(f"alert {alert}: for {r.get('for', '0s')} -> {dur}")
            r["for"] = dur
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    config = {
        "global": {"evaluation_interval": args.test_evaluation_interval or "30s"},
        "rule_files": [str((out / "rules.yaml").resolve())],
        "alerting": {"alertmanagers": [{"api_version": "v2", "static_configs": [{"targets": [args.alertmanager]}]}]},
        "scrape_configs": scrape_configs,
    }
    if args.test_evaluation_interval:
        notes.append(f"evaluation interval 30s -> {args.test_evaluation_interval}")
    header = "# Derived from the rendered ServiceMonitor and PrometheusRule by tests/alerts/derive.py.\n"
    header += "".join(f"# test-only: {n}\n" for n in notes)
    (out / "prometheus.yml").write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


# ------------------------------------------------------------------------------ Alertmanager


def duration_fields(route, out):
    for src, dst in (("groupWait", "group_wait"), ("groupInterval", "group_interval"), ("repeatInterval", "repeat_interval")):
        if src in route:
            out[dst] = route[src]


def convert_route(route, ns, name, top_level):
    """prometheus-operator's convertRoute (receiver names namespaced as <ns>/<amc>/<receiver> by
    makeNamespacedString, matchers as `name<op>"value"` strings, Alertmanager >= 0.22) followed,
    on the top-level route of each AlertmanagerConfig, by its enforcers: namespaceEnforcer
    appends the `namespace="<ns>"` matcher (the default matcher strategy OnNamespace) and
    continueToNextRoute forces `continue: true`."""
    out = {}
    if route.get("receiver"):
        out["receiver"] = f"{ns}/{name}/{route['receiver']}"
    if route.get("groupBy"):
        out["group_by"] = list(route["groupBy"])
    duration_fields(route, out)
    matchers = []
    for m in route.get("matchers") or []:
        op = m.get("matchType") or ("=~" if m.get("regex") else "=")
        matchers.append(f'{m["name"]}{op}"{m.get("value", "")}"')
    if top_level:
        matchers.append(f'namespace="{ns}"')
    if matchers:
        out["matchers"] = matchers
    out["continue"] = True if top_level else bool(route.get("continue", False))
    children = [convert_route(r, ns, name, False) for r in route.get("routes") or []]
    if children:
        out["routes"] = children
    return out


def convert_email(cfg, store, assets):
    """One emailConfig; a Secret the TLS settings name is written into `assets` (a directory, as
    prometheus-operator mounts such Secrets into Alertmanager) and referenced by path."""
    out = {
        "to": cfg["to"],
        "from": cfg["from"],
        "smarthost": cfg["smarthost"],
        "send_resolved": bool(cfg.get("sendResolved", False)),
    }
    if "authUsername" in cfg:
        out["auth_username"] = cfg["authUsername"]
    if "authPassword" in cfg:
        # The operator reads the referenced Secret key into the generated configuration.
        out["auth_password"] = secret_value(store, cfg["authPassword"]["name"], cfg["authPassword"]["key"])
    if "requireTLS" in cfg:
        out["require_tls"] = bool(cfg["requireTLS"])
    ca = ((cfg.get("tlsConfig") or {}).get("ca") or {}).get("secret")
    if ca:
        path = Path(assets) / ca["name"] / ca["key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret_value(store, ca["name"], ca["key"]), encoding="utf-8")
        out["tls_config"] = {"ca_file": str(path)}
    return out


def alertmanager(args):
    docs = load(args.rendered)
    store = secrets(args.secret)
    notes = []
    # The Alertmanager's own base configuration (kube-prometheus-stack's default): everything
    # unmatched goes to a receiver that does nothing.
    root = {"receiver": "null", "group_by": ["namespace"], "routes": []}
    receivers = [{"name": "null"}]
    for amc in (d for d in docs if d.get("kind") == "AlertmanagerConfig"):
        ns, name = amc["metadata"]["namespace"], amc["metadata"]["name"]
        route = convert_route(amc["spec"]["route"], ns, name, True)
        if args.test_group_wait:
            notes.append(f"{ns}/{name}: group_wait {route.get('group_wait', 'default')} -> {args.test_group_wait}")
            route["group_wait"] = args.test_group_wait
        # AddAlertmanagerConfigs puts these routes before the base configuration's own routes.
        root["routes"].append(route)
        for r in amc["spec"].get("receivers") or []:
            rec = {"name": f"{ns}/{name}/{r['name']}"}
            if r.get("emailConfigs"):
                assets = Path(args.out).parent / "alertmanager-secrets"
                rec["email_configs"] = [convert_email(c, store, assets) for c in r["emailConfigs"]]
            receivers.append(rec)
    if len(receivers) == 1:
        sys.exit("no AlertmanagerConfig in the render")
    header = "# Derived from the rendered AlertmanagerConfig by tests/alerts/derive.py.\n"
    header += "".join(f"# test-only: {n}\n" for n in notes)
    text = yaml.safe_dump({"route": root, "receivers": receivers}, sort_keys=False)
    Path(args.out).write_text(header + text, encoding="utf-8")


# ---------------------------------------------------------------------------- runtime env


def runtime_env(args):
    """KEY=VALUE lines of the runtime container's environment (envFrom ConfigMaps, then env)."""
    docs = load(args.rendered)
    store = secrets(args.secret)
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for src in container.get("envFrom") or []:
        cm = one(docs, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm.get("data") or {})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if args.any_secret is not None:
                env[e["name"]] = store.get(f"{ref['name']}/{ref['key']}", args.any_secret)
            else:
                env[e["name"]] = secret_value(store, ref["name"], ref["key"])
    if args.mount_root:
        mount_secret_volumes(deployment["spec"]["template"]["spec"], container, store, args.mount_root, env)
    for k, v in sorted(env.items()):
        print(f"{k}={v}")


def mount_secret_volumes(pod, container, store, root, env):
    """Write each Secret volume item whose value is in `store` where the kubelet would mount it,
    below `root`, and move the variables naming a path under that mount point along."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        secret = volumes.get(m["name"], {}).get("secret")
        if not secret:
            continue
        items = secret.get("items") or []
        if not all(f"{secret['secretName']}/{i['key']}" in store for i in items):
            continue
        target = Path(root) / m["mountPath"].lstrip("/")
        for i in items:
            path = target / i["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(store[f"{secret['secretName']}/{i['key']}"], encoding="utf-8")
        prefix = m["mountPath"].rstrip("/") + "/"
        for k, v in env.items():
            if v.startswith(prefix):
                env[k] = str(target / v[len(prefix):])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prometheus")
    pp.add_argument("--rendered", required=True)
    pp.add_argument("--target", required=True, help="host:port standing in for the pod's endpoint")
    pp.add_argument("--pod", required=True, help="pod name the endpoint belongs to")
    pp.add_argument("--alertmanager", required=True, help="host:port of Alertmanager")
    pp.add_argument("--out", required=True, help="directory for prometheus.yml and rules.yaml")
    pp.add_argument("--sidecar-target", help="host:port standing in for an injected sidecar's metrics port (needs a PodMonitor)")
    pp.add_argument("--sidecar-pod", default="shop-5f7b9c6d4-q8z2m", help="the application pod the sidecar runs in")
    pp.add_argument("--sidecar-container", default="facekey-runtime", help="the injected container's name (the webhook's)")
    pp.add_argument("--test-scrape-interval")
    pp.add_argument("--test-evaluation-interval")
    pp.add_argument("--test-for", action="append", metavar="ALERT=DURATION")
    pa = sub.add_parser("alertmanager")
    pa.add_argument("--rendered", required=True)
    pa.add_argument("--out", required=True)
    pa.add_argument("--secret", action="append", metavar="NAME/KEY=VALUE")
    pa.add_argument("--test-group-wait")
    pr = sub.add_parser("runtime-env")
    pr.add_argument("--rendered", required=True)
    pr.add_argument("--secret", action="append", metavar="NAME/KEY=VALUE")
    pr.add_argument("--mount-root", help="directory standing in for the container's filesystem")
    pr.add_argument("--any-secret", metavar="VALUE", help="the value of every Secret key not given by --secret")
    args = p.parse_args()
    {"prometheus": prometheus, "alertmanager": alertmanager, "runtime-env": runtime_env}[args.cmd](args)


if __name__ == "__main__":
    main()
