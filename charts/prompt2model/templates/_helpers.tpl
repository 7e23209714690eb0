{{/*
Names, labels, images and the settings every p2m container shares.
*/}}

{{- define "p2m.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-prompt2model", or the release name when it already holds the chart name. */}}
{{- define "p2m.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "p2m.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; "component" is added per service. */}}
{{- define "p2m.labels" -}}
helm.sh/chart: {{ include "p2m.chart" . }}
{{ include "p2m.releaseLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prompt2model
{{- end }}

{{/* The labels that say "a pod of this release" (NetworkPolicy peers). */}}
{{- define "p2m.releaseLabels" -}}
app.kubernetes.io/name: {{ include "p2m.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "parser"). */}}
{{- define "p2m.selectorLabels" -}}
{{ include "p2m.releaseLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "p2m.componentLabels" -}}
{{ include "p2m.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object name of one component: "<fullname>-<component>". */}}
{{- define "p2m.componentName" -}}
{{- printf "%s-%s" (include "p2m.fullname" .root) .component }}
{{- end }}

{{/* "repository:tag" of an image block, the tag defaulting to the chart's appVersion. */}}
{{- define "p2m.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The p2m image of a service: (dict "root" $ "svc" $values) with the service's override. */}}
{{- define "p2m.serviceImage" -}}
{{- $image := merge (deepCopy (default dict .svc.image)) .root.Values.image }}
{{- include "p2m.imageRef" (dict "root" .root "image" $image) }}
{{- end }}

{{/* The image of the RayJob pods and the predictor (P2M_IMAGE): the GPU one when gpu.enabled. */}}
{{- define "p2m.workloadImage" -}}
{{- if .Values.gpu.enabled }}
{{- include "p2m.imageRef" (dict "root" . "image" .Values.gpu.image) }}
{{- else }}
{{- include "p2m.imageRef" (dict "root" . "image" .Values.image) }}
{{- end }}
{{- end }}

{{- define "p2m.trainerBackend" -}}
{{- .Values.trainer.backend | default (ternary "rayjob" "local-ray" .Values.kuberay.enabled) }}
{{- end }}

{{- define "p2m.deployerBackend" -}}
{{- .Values.deployer.backend | default (ternary "kserve" "local" .Values.kserve.enabled) }}
{{- end }}

{{- define "p2m.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-artifacts" (include "p2m.fullname" .)) }}
{{- end }}

{{/* ServiceAccount of the services and workload pods: no API access. */}}
{{- define "p2m.serviceAccountName" -}}
{{- include "p2m.fullname" . }}
{{- end }}

{{/* The chart's own Secret (API key and token given as values). */}}
{{- define "p2m.secretName" -}}
{{- printf "%s-secrets" (include "p2m.fullname" .) }}
{{- end }}

{{- define "p2m.llmKeySecret" -}}
{{- .Values.llm.apiKey.existingSecret | default (include "p2m.secretName" .) }}
{{- end }}

{{- define "p2m.hasLlmKey" -}}
{{- if or .Values.llm.apiKey.existingSecret .Values.llm.apiKey.value }}true{{ end }}
{{- end }}

{{- define "p2m.tokenSecret" -}}
{{- .Values.auth.existingSecret | default (include "p2m.secretName" .) }}
{{- end }}

{{/* Base URL every LLM call goes to: the in-chart endpoint or llm.baseUrl. */}}
{{- define "p2m.llmBaseUrl" -}}
{{- if .Values.llm.enabled }}
{{- printf "http://%s.%s.svc:%d/v1" (include "p2m.componentName" (dict "root" . "component" "llm")) .Release.Namespace (int .Values.llm.port) }}
{{- else }}
{{- required "llm.baseUrl is required when llm.enabled is false (an OpenAI-compatible endpoint)" .Values.llm.baseUrl }}
{{- end }}
{{- end }}

{{/* "host:port" of a service for the gateway: (dict "root" $ "component" "parser"). */}}
{{- define "p2m.serviceAddr" -}}
{{- $svc := index .root.Values .component }}
{{- printf "%s.%s.svc:%d" (include "p2m.componentName" .) .root.Release.Namespace (int $svc.port) }}
{{- end }}

{{/* Environment of every p2m container (services, Ray pods, predictor). */}}
{{- define "p2m.baseEnv" -}}
- name: P2M_DATA_DIR
  value: {{ .Values.dataDir | quote }}
- name: P2M_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: P2M_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /tmp/hf
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: GRADIO_ANALYTICS_ENABLED
  value: "False"
{{- if .Values.hubOffline }}
- name: P2M_HUB_OFFLINE
  value: "true"
- name: HF_HUB_OFFLINE
  value: "1"
- name: HF_DATASETS_OFFLINE
  value: "1"
{{- end }}
{{- end }}

{{/* LLM settings of the services that call it (parser, retriever, generator, evaluator). */}}
{{- define "p2m.llmEnv" -}}
- name: P2M_LLM_BASE_URL
  value: {{ include "p2m.llmBaseUrl" . | quote }}
- name: P2M_LLM_MODEL
  value: {{ .Values.llm.model | quote }}
{{- if and .Values.llm.enabled (eq .Values.llm.engine "llamacpp") }}
{{- /* llama.cpp's repetition penalties look 64 tokens back unless told (see llm_penalty_window) */}}
- name: P2M_LLM_PENALTY_WINDOW
  value: "256"
{{- end }}
{{- if include "p2m.hasLlmKey" . }}
- name: P2M_LLM_API_KEY_FILE
  value: /etc/p2m/secrets/llm/api-key
{{- end }}
{{- end }}

{{- define "p2m.llmKeyVolumeMount" -}}
{{- if include "p2m.hasLlmKey" . }}
- name: llm-api-key
  mountPath: /etc/p2m/secrets/llm
  readOnly: true
{{- end }}
{{- end }}

{{- define "p2m.llmKeyVolume" -}}
{{- if include "p2m.hasLlmKey" . }}
- name: llm-api-key
  secret:
    secretName: {{ include "p2m.llmKeySecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.llm.apiKey.secretKey }}
        path: api-key
{{- end }}
{{- end }}

{{/* The Kubernetes settings of the trainer and the deployer (their cluster backends). */}}
{{- define "p2m.clusterEnv" -}}
- name: P2M_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: P2M_ARTIFACTS_PVC
  value: {{ include "p2m.claimName" . | quote }}
- name: P2M_IMAGE
  value: {{ include "p2m.workloadImage" . | quote }}
{{- end }}

{{/* Volumes of every p2m pod: the artifacts claim and a writable /tmp. */}}
{{- define "p2m.baseVolumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "p2m.claimName" . }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSize }}
{{- end }}

{{- define "p2m.baseVolumeMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* A /dev/shm of the given size: (dict "size" "2Gi"). */}}
{{- define "p2m.shmVolume" -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .size }}
{{- end }}

{{- define "p2m.shmVolumeMount" -}}
- name: dshm
  mountPath: /dev/shm
{{- end }}

{{/* Resources with GPUs added: (dict "root" $ "resources" $r "gpus" N). */}}
{{- define "p2m.gpuResources" -}}
{{- $resources := deepCopy (default dict .resources) }}
{{- if gt (int .gpus) 0 }}
{{- $gpu := dict .root.Values.gpu.resourceName (int .gpus) }}
{{- $_ := set $resources "limits" (merge (default dict $resources.limits) $gpu) }}
{{- $_ := set $resources "requests" (merge (default dict $resources.requests) $gpu) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Fail when GPUs are requested from the CPU image. */}}
{{- define "p2m.checkGpus" -}}
{{- if and (gt (int .gpus) 0) (not .root.Values.gpu.enabled) }}
{{- fail (printf "%s asks for GPUs: set gpu.enabled=true (the CUDA image, Dockerfile.gpu)" .what) }}
{{- end }}
{{- end }}

{{/* nodeSelector of a pod, with gpu.nodeSelector when it requests GPUs: (dict "root" $ "nodeSelector" {} "gpus" N). */}}
{{- define "p2m.nodeSelector" -}}
{{- $selector := deepCopy (default dict .nodeSelector) }}
{{- if gt (int .gpus) 0 }}
{{- $selector = merge $selector .root.Values.gpu.nodeSelector }}
{{- end }}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "p2m.tolerations" -}}
{{- $tolerations := default list .tolerations }}
{{- if gt (int .gpus) 0 }}
{{- $tolerations = concat $tolerations .root.Values.gpu.tolerations }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A Kubernetes memory quantity (Pi, Ti, Gi, Mi, Ki, P, T, G, M, k or bytes) in GB (10^9
bytes); anything else fails the render, naming the value. */}}
{{- define "p2m.memoryGB" -}}
{{- $q := toString . -}}
{{- $number := regexReplaceAll "(Pi|Ti|Gi|Mi|Ki|P|T|G|M|k)$" $q "" -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([eE][+]?[0-9]+)?$" $number) -}}
{{- fail (printf "trainer.rayJob.worker.resources.limits.memory: %q is not a memory quantity (e.g. 16Gi, 16G)" $q) -}}
{{- end -}}
{{- if hasSuffix "Pi" $q -}}{{ mulf (float64 $number) 1125899.906842624 }}
{{- else if hasSuffix "Ti" $q -}}{{ mulf (float64 $number) 1099.511627776 }}
{{- else if hasSuffix "Gi" $q -}}{{ mulf (float64 $number) 1.073741824 }}
{{- else if hasSuffix "Mi" $q -}}{{ mulf (float64 $number) 0.001048576 }}
{{- else if hasSuffix "Ki" $q -}}{{ mulf (float64 $number) 0.000001024 }}
{{- else if hasSuffix "P" $q -}}{{ mulf (float64 $number) 1000000 }}
{{- else if hasSuffix "T" $q -}}{{ mulf (float64 $number) 1000 }}
{{- else if hasSuffix "G" $q -}}{{ float64 $number }}
{{- else if hasSuffix "M" $q -}}{{ divf (float64 $number) 1000 }}
{{- else if hasSuffix "k" $q -}}{{ divf (float64 $number) 1000000 }}
{{- else -}}{{ divf (float64 $number) 1000000000 }}
{{- end -}}
{{- end }}
