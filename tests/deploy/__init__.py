"""Static checks of what cannot run here: Dockerfiles, compose files, Kubernetes manifests.

Nothing is built, started or applied. hadolint lints every Dockerfile; docker-compose and
kubectl's kustomize render every deployment; rendered objects are validated against the
Kubernetes JSON schemas (kubernetes-validate) and the Prometheus Operator CRD models (cloudcoil);
every `fedllm` command line in them is parsed by the real CLI, and its FEDLLM_* variables,
ports, mounts and certificates are checked against what that command does. NetworkPolicies are
evaluated as the API defines them. scripts/deploy-tools.sh installs the tools; without one a
test skips, or fails when CI is set.
"""
