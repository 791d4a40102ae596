{{/*
One RayCluster worker group: (dict "root" $ "name" <groupName> "group" <merged values> "gpu" <bool>).
The worker joins with files/ray-node.py: `gearshift node start`'s declaration, Ray in the foreground.
*/}}

{{- define "gearshift.workerGroup" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- $resources := deepCopy ($group.resources | default dict) -}}
{{- if .gpu -}}
{{- $limits := get $resources "limits" | default dict -}}
{{- $_ := set $limits $group.gpuResource (toString $group.gpusPerPod) -}}
{{- $_ = set $resources "limits" $limits -}}
{{- end -}}
{{- $nodeSelector := deepCopy ($group.nodeSelector | default dict) -}}
{{- if .gpu -}}
{{- $_ := set $nodeSelector $group.gpuProductLabel $group.gpuProduct -}}
{{- end -}}
{{- if or (gt (int $group.minReplicas) (int $group.maxReplicas)) (lt (int $group.replicas) (int $group.minReplicas)) (gt (int $group.replicas) (int $group.maxReplicas)) -}}
{{- fail (printf "worker group %s: need minReplicas <= replicas <= maxReplicas (got %v, %v, %v)" .name $group.minReplicas $group.replicas $group.maxReplicas) -}}
{{- end -}}
- groupName: {{ .name }}
  replicas: {{ $group.replicas }}
  minReplicas: {{ $group.minReplicas }}
  maxReplicas: {{ $group.maxReplicas }}
  template:
    metadata:
      labels:
        {{- include "gearshift.componentLabels" (dict "root" $root "component" "worker") | nindent 8 }}
        gearshift.io/node-group: {{ .name }}
        {{- with $group.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/scripts: {{ $root.Files.Glob "files/*.py" | toString | sha256sum }}
        {{- with $group.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "gearshift.workloadServiceAccountName" $root }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        # KubeRay expects the Ray container first.
        - name: ray-worker
          image: {{ include "gearshift.image" (dict "root" $root "image" $group.image) }}
          imagePullPolicy: {{ include "gearshift.imagePullPolicy" (dict "root" $root "image" $group.image) }}
          command: ["/bin/bash", "-c"]
          args:
            - |
              ulimit -n 65536 2>/dev/null || true
              exec python3 {{ include "gearshift.paths.scriptsDir" $root }}/ray-node.py \
                --ray-label "gearshift.io/kubernetes-node=${NODE_NAME}" \
                --ray-start-arg=--metrics-export-port=8080 \
                --node-id "${POD_NAME}" \
                --group {{ .name }} \
                {{- if not (kindIs "invalid" $group.price) }}
                --price {{ $group.price }} \
                {{- end }}
                {{- if $group.labels }}
                --labels {{ include "gearshift.rayLabels" $group.labels | quote }} \
                {{- end }}
                --ownership {{ $group.ownership }}
          env:
            {{- include "gearshift.processEnv" $root | nindent 12 }}
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: HF_HOME
              value: /var/cache/gearshift/huggingface
            - name: XDG_CACHE_HOME
              value: /var/cache/gearshift
            {{- with $group.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: 8080
          {{- with $resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- include "gearshift.containerSecurityContext" (dict "root" $root "override" $group.containerSecurityContext) | nindent 12 }}
          volumeMounts:
            - name: scripts
              mountPath: {{ include "gearshift.paths.scriptsDir" $root }}
              readOnly: true
            - name: tmp
              mountPath: /tmp
            - name: model-cache
              mountPath: /var/cache/gearshift
      volumes:
        - name: scripts
          configMap:
            name: {{ include "gearshift.fullname" $root }}-scripts
            defaultMode: 0555
        - name: tmp
          emptyDir: {}
        - name: model-cache
          {{- toYaml $root.Values.workers.modelCache | nindent 10 }}
{{- end -}}

{{- /* `k=v,k2=v2` for `gearshift node start --labels`, sorted by key. */}}
{{- define "gearshift.rayLabels" -}}
{{- $pairs := list -}}
{{- range $key := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (index $ $key | toString)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
