{{/*
Names, labels and the pieces several templates share. Helm 3 and 4 (sprig functions only).
*/}}

{{- define "gearshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The object-name prefix: 48 characters at most, so `<prefix>-batch-store` and the Service
names stay valid DNS labels (63). */}}
{{- define "gearshift.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gearshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: immutable once installed (Deployment selectors cannot change). */}}
{{- define "gearshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gearshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gearshift.labels" -}}
helm.sh/chart: {{ include "gearshift.chart" . }}
{{ include "gearshift.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gearshift
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "head"). */}}
{{- define "gearshift.componentLabels" -}}
{{ include "gearshift.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gearshift.componentSelectorLabels" -}}
{{ include "gearshift.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The RayCluster's name: KubeRay derives `<name>-head-svc` and pod names from it. */}}
{{- define "gearshift.rayClusterName" -}}
{{- include "gearshift.fullname" . | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
A name KubeRay derives from the RayCluster's, as its utils.CheckName makes it: a leading digit
becomes "r" (its 50-character cut never applies: the cluster name has at most 40).
*/}}
{{- define "gearshift.kuberayName" -}}
{{- if regexMatch "^[0-9]" . -}}
{{- printf "r%s" (substr 1 (len .) .) -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* The head Service KubeRay makes for the RayCluster (`<cluster>-head-svc`), as a host name. */}}
{{- define "gearshift.headHost" -}}
{{- printf "%s.%s.svc" (include "gearshift.kuberayName" (printf "%s-head-svc" (include "gearshift.rayClusterName" .))) .Release.Namespace -}}
{{- end -}}

{{/* Ray's GCS on the head, where a Ray node joins: `<head service>:<gcsPort>`. */}}
{{- define "gearshift.gcsAddress" -}}
{{- printf "%s:%v" (include "gearshift.headHost" .) .Values.rayCluster.gcsPort -}}
{{- end -}}

{{/* The Secret KubeRay makes for `authOptions.mode: token` (key `auth_token`). */}}
{{- define "gearshift.rayAuthSecretName" -}}
{{- include "gearshift.kuberayName" (include "gearshift.rayClusterName" .) -}}
{{- end -}}

{{/*
Ray token authentication for a Ray process in a pod KubeRay does not manage (KubeRay sets the
same two variables in its own pods).
*/}}
{{- define "gearshift.rayAuthEnv" -}}
{{- if ne .Values.rayCluster.authMode "disabled" -}}
- name: RAY_AUTH_MODE
  value: {{ .Values.rayCluster.authMode }}
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "gearshift.rayAuthSecretName" . }}
      key: auth_token
{{- end -}}
{{- end -}}

{{- define "gearshift.controllerServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-controller" (include "gearshift.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Token-less ServiceAccount of worker, gateway and test pods. */}}
{{- define "gearshift.workloadServiceAccountName" -}}
{{- printf "%s-workload" (include "gearshift.fullname" .) -}}
{{- end -}}

{{- define "gearshift.secretName" -}}
{{- default (printf "%s-auth" (include "gearshift.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* An image reference: (dict "root" $ "image" <override map>). */}}
{{- define "gearshift.image" -}}
{{- $image := mergeOverwrite (deepCopy .root.Values.image) (.image | default dict) -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}

{{- define "gearshift.imagePullPolicy" -}}
{{- $image := mergeOverwrite (deepCopy .root.Values.image) (.image | default dict) -}}
{{- $image.pullPolicy -}}
{{- end -}}

{{/* Ports the gateway and the admin API listen on, from the Gearshift config. */}}
{{- define "gearshift.gatewayPort" -}}
{{- $port := dig "gateway" "port" 8000 (.Values.config | default dict) | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail "config.gateway.port must be a fixed port (1-65535) on Kubernetes" -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{- define "gearshift.adminPort" -}}
{{- $port := dig "gateway" "admin_port" 8001 (.Values.config | default dict) | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail "config.gateway.admin_port must be a fixed port (1-65535) on Kubernetes" -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* Where pods mount things. */}}
{{- define "gearshift.paths.configDir" -}}/etc/gearshift/config{{- end -}}
{{- define "gearshift.paths.secretDir" -}}/etc/gearshift/secret{{- end -}}
{{- define "gearshift.paths.scriptsDir" -}}/opt/gearshift/scripts{{- end -}}
{{- define "gearshift.paths.runDir" -}}/run/gearshift{{- end -}}

{{/*
The config file the ConfigMap holds: `.Values.config` with the fields the chart owns set.
Refuses a secret in it.
*/}}
{{- define "gearshift.config" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $gateway := deepCopy (get $config "gateway" | default dict) -}}
{{- if hasKey $gateway "admin_token" -}}
{{- fail "config.gateway.admin_token must not be set in values: the admin token comes from the Secret (auth.existingSecret / auth.secretKeys.adminToken)" -}}
{{- end -}}
{{- $auth := deepCopy (get $gateway "auth" | default dict) -}}
{{- if hasKey $gateway "shutdown_drain_s" -}}
{{- fail "config.gateway.shutdown_drain_s is set by the chart: use gateway.drainSeconds" -}}
{{- end -}}
{{- $_ := set $gateway "shutdown_drain_s" (int .Values.gateway.drainSeconds) -}}
{{- $_ = set $auth "keys_file" (printf "%s/%s" (include "gearshift.paths.secretDir" .) .Values.auth.secretKeys.keysFile) -}}
{{- $_ = set $gateway "auth" $auth -}}
{{- $_ = set $gateway "host" "0.0.0.0" -}}
{{- $_ = set $gateway "admin_host" "0.0.0.0" -}}
{{- $_ = set $gateway "port" (include "gearshift.gatewayPort" . | int) -}}
{{- $_ = set $gateway "admin_port" (include "gearshift.adminPort" . | int) -}}
{{- $_ = set $config "gateway" $gateway -}}
{{- if .Values.batchStore.enabled -}}
{{- $batch := deepCopy (get $config "batch" | default dict) -}}
{{- $_ = set $batch "store_path" "/var/lib/gearshift/batch" -}}
{{- $_ = set $config "batch" $batch -}}
{{- end -}}
{{- $kubernetes := deepCopy (get $config "kubernetes" | default dict) -}}
{{- if not (hasKey $kubernetes "enabled") -}}
{{- $_ = set $kubernetes "enabled" true -}}
{{- end -}}
{{- $_ = set $kubernetes "namespace" .Release.Namespace -}}
{{- $_ = set $kubernetes "ray_cluster" (include "gearshift.rayClusterName" .) -}}
{{- $_ = set $kubernetes "worker_groups" (include "gearshift.workerGroupScaling" . | fromYamlArray) -}}
{{- $_ = set $config "kubernetes" $kubernetes -}}
{{- toYaml $config -}}
{{- end -}}

{{/* `kubernetes.worker_groups` of the config: what the controller may resize, from the groups. */}}
{{- define "gearshift.workerGroupScaling" -}}
{{- $groups := list -}}
{{- range $name, $entry := .Values.gpuGroups -}}
{{- $group := mergeOverwrite (deepCopy $.Values.gpuGroupDefaults) (deepCopy $entry) -}}
{{- if not $group.accelerator -}}
{{- fail (printf "gpuGroups.%s.accelerator is required (the Gearshift catalog name of its GPUs, e.g. H100-SXM; see `gearshift catalog`)" $name) -}}
{{- end -}}
{{- $scaling := dict "name" $name "accelerator" $group.accelerator "gpus_per_pod" (int $group.gpusPerPod) "min_replicas" (int $group.minReplicas) "max_replicas" (int $group.maxReplicas) "ownership" $group.ownership -}}
{{- if not (kindIs "invalid" $group.price) -}}
{{- $_ := set $scaling "price_per_pod_hour" $group.price -}}
{{- end -}}
{{- $groups = append $groups $scaling -}}
{{- end -}}
{{- if .Values.cpuGroup.enabled -}}
{{- $cpu := .Values.cpuGroup -}}
{{- $scaling := dict "name" $cpu.name "accelerator" "CPU" "gpus_per_pod" 0 "min_replicas" (int $cpu.minReplicas) "max_replicas" (int $cpu.maxReplicas) "ownership" $cpu.ownership -}}
{{- if not (kindIs "invalid" $cpu.price) -}}
{{- $_ := set $scaling "price_per_pod_hour" $cpu.price -}}
{{- end -}}
{{- $groups = append $groups $scaling -}}
{{- end -}}
{{- toYaml $groups -}}
{{- end -}}

{{/* `gateway.shutdown_timeout_s` of the config (default 5), in whole seconds. */}}
{{- define "gearshift.shutdownTimeoutSeconds" -}}
{{- dig "gateway" "shutdown_timeout_s" 5 (.Values.config | default dict) | float64 | ceil | int -}}
{{- end -}}

{{/*
The seconds a gateway needs once Kubernetes stops its pod: the preStop sleep, then after
SIGTERM `shutdown_drain_s` (/ready answers 503, requests still served) and
`shutdown_timeout_s` (in-flight requests finish).
*/}}
{{- define "gearshift.gatewayStopSeconds" -}}
{{- add .Values.gateway.preStopSleepSeconds .Values.gateway.drainSeconds (include "gearshift.shutdownTimeoutSeconds" . | int) -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: (dict "grace" <value or nil> "needed" <seconds> "key" <value name>
"extra" <the sum's terms beyond the gateway's, for the message>). Nil: what is needed plus 5 s
for the process to exit; a value below what is needed fails.
*/}}
{{- define "gearshift.gracePeriod" -}}
{{- $needed := int .needed -}}
{{- if kindIs "invalid" .grace -}}
{{- add $needed 5 -}}
{{- else if lt (int .grace) $needed -}}
{{- fail (printf "%s (%v) must be at least %v: gateway.preStopSleepSeconds + gateway.drainSeconds + config.gateway.shutdown_timeout_s%s" .key .grace $needed .extra) -}}
{{- else -}}
{{- int .grace -}}
{{- end -}}
{{- end -}}

{{/* The standalone gateway pods' grace period. */}}
{{- define "gearshift.gatewayGracePeriod" -}}
{{- include "gearshift.gracePeriod" (dict "grace" .Values.gateway.standalone.terminationGracePeriodSeconds "needed" (include "gearshift.gatewayStopSeconds" .) "key" "gateway.standalone.terminationGracePeriodSeconds" "extra" "") -}}
{{- end -}}

{{/* The head's grace period: its gateway stops, then the controller stops the replicas. */}}
{{- define "gearshift.headGracePeriod" -}}
{{- $needed := add (include "gearshift.gatewayStopSeconds" . | int) .Values.head.shutdownSeconds -}}
{{- include "gearshift.gracePeriod" (dict "grace" .Values.head.terminationGracePeriodSeconds "needed" $needed "key" "head.terminationGracePeriodSeconds" "extra" " + head.shutdownSeconds") -}}
{{- end -}}

{{/* The container securityContext: (dict "root" $ "override" <map or nil>). */}}
{{- define "gearshift.containerSecurityContext" -}}
{{- if .override -}}
{{- toYaml .override -}}
{{- else -}}
{{- toYaml .root.Values.containerSecurityContext -}}
{{- end -}}
{{- end -}}

{{/* Volumes every Gearshift process pod mounts: config, secret, scripts, run and tmp. */}}
{{- define "gearshift.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "gearshift.fullname" . }}-config
- name: scripts
  configMap:
    name: {{ include "gearshift.fullname" . }}-scripts
    defaultMode: 0555
- name: secret
  secret:
    secretName: {{ include "gearshift.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auth.secretKeys.adminToken }}
        path: admin-token
      - key: {{ .Values.auth.secretKeys.keysFile }}
        path: {{ .Values.auth.secretKeys.keysFile }}
- name: run
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
- name: tmp
  emptyDir: {}
{{- end -}}

{{/*
Init containers that write /run/gearshift/config.yaml (ConfigMap + admin token) and check it
with `gearshift config validate`: (dict "root" $ "image" <override map>).
*/}}
{{- define "gearshift.renderConfigInitContainers" -}}
{{- $root := .root -}}
- name: render-config
  image: {{ include "gearshift.image" . }}
  imagePullPolicy: {{ include "gearshift.imagePullPolicy" . }}
  command:
    - python3
    - {{ include "gearshift.paths.scriptsDir" $root }}/render-config.py
    - {{ include "gearshift.paths.configDir" $root }}/config.yaml
    - {{ include "gearshift.paths.secretDir" $root }}/admin-token
    - {{ include "gearshift.paths.runDir" $root }}/config.yaml
  securityContext:
    {{- include "gearshift.containerSecurityContext" (dict "root" $root) | nindent 4 }}
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {memory: 256Mi}
  volumeMounts:
    {{- include "gearshift.processVolumeMounts" $root | nindent 4 }}
- name: check-config
  image: {{ include "gearshift.image" . }}
  imagePullPolicy: {{ include "gearshift.imagePullPolicy" . }}
  command:
    - gearshift
    - config
    - validate
    - {{ include "gearshift.paths.runDir" $root }}/config.yaml
  env:
    - name: HOME
      value: /tmp
  securityContext:
    {{- include "gearshift.containerSecurityContext" (dict "root" $root) | nindent 4 }}
  resources:
    requests: {cpu: 100m, memory: 256Mi}
    limits: {memory: 512Mi}
  volumeMounts:
    {{- include "gearshift.processVolumeMounts" $root | nindent 4 }}
{{- end -}}

{{- define "gearshift.processVolumeMounts" -}}
- name: config
  mountPath: {{ include "gearshift.paths.configDir" . }}
  readOnly: true
- name: secret
  mountPath: {{ include "gearshift.paths.secretDir" . }}
  readOnly: true
- name: scripts
  mountPath: {{ include "gearshift.paths.scriptsDir" . }}
  readOnly: true
- name: run
  mountPath: {{ include "gearshift.paths.runDir" . }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Environment of every Gearshift process. */}}
{{- define "gearshift.processEnv" -}}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}

{{/* Gateway probes and shutdown, on the pods that run a gateway. */}}
{{- define "gearshift.gatewayProbes" -}}
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: {{ .Values.gateway.readinessProbe.periodSeconds }}
  failureThreshold: {{ .Values.gateway.readinessProbe.failureThreshold }}
  timeoutSeconds: {{ .Values.gateway.readinessProbe.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .Values.gateway.livenessProbe.periodSeconds }}
  failureThreshold: {{ .Values.gateway.livenessProbe.failureThreshold }}
  timeoutSeconds: {{ .Values.gateway.livenessProbe.timeoutSeconds }}
{{- if gt (int .Values.gateway.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ .Values.gateway.preStopSleepSeconds }}
{{- end }}
{{- end -}}

{{/* The pods that serve the public API: the head, or the standalone gateway Deployment. */}}
{{- define "gearshift.gatewayComponent" -}}
{{- if .Values.gateway.standalone.enabled -}}gateway{{- else -}}head{{- end -}}
{{- end -}}
