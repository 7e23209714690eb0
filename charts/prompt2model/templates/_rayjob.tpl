{{/*
The RayJob template (KubeRay ray.io/v1), stored in the workload-templates ConfigMap as
rayjob.yaml and read by the trainer (P2M_RAYJOB_TEMPLATE). It is a complete, valid RayJob;
on a copy the trainer sets:
  - metadata.name (here "placeholder") and metadata.labels (it may add to these),
  - spec.entrypoint (here "p2m train-job --job placeholder"),
  - spec.rayClusterSpec.workerGroupSpecs[0].replicas, .minReplicas and .maxReplicas (the
    training's worker count; here trainer.rayJob.worker.replicas).
Everything else comes from values: image, resources, GPUs per worker, nodeSelector and
tolerations, the artifacts volume at the data dir in head and workers, the ServiceAccount,
shutdownAfterJobFinishes and ttlSecondsAfterFinished.
*/}}
{{- define "p2m.rayjob" -}}
{{- $rj := .Values.trainer.rayJob }}
{{- include "p2m.checkGpus" (dict "root" . "gpus" $rj.worker.gpus "what" "trainer.rayJob.worker.gpus") }}
{{- include "p2m.checkGpus" (dict "root" . "gpus" $rj.head.gpus "what" "trainer.rayJob.head.gpus") }}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: placeholder
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "p2m.componentLabels" (dict "root" . "component" "training") | nindent 4 }}
spec:
  entrypoint: p2m train-job --job placeholder
  submissionMode: K8sJobMode
  shutdownAfterJobFinishes: {{ $rj.shutdownAfterJobFinishes }}
  ttlSecondsAfterFinished: {{ $rj.ttlSecondsAfterFinished }}
  {{- if $rj.activeDeadlineSeconds }}
  activeDeadlineSeconds: {{ $rj.activeDeadlineSeconds }}
  {{- end }}
  backoffLimit: 0
  # The pod that runs `ray job submit` against the head (KubeRay fills in its command).
  submitterPodTemplate:
    metadata:
      labels:
        {{- include "p2m.selectorLabels" (dict "root" . "component" "training") | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "p2m.serviceAccountName" . }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: ray-job-submitter
          image: {{ include "p2m.workloadImage" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          env:
            - name: HOME
              value: /tmp
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {memory: 1Gi}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 1Gi
  rayClusterSpec:
    rayVersion: {{ $rj.rayVersion | quote }}
    enableInTreeAutoscaling: false
    headGroupSpec:
      rayStartParams:
        {{- toYaml $rj.head.rayStartParams | nindent 8 }}
      template:
        {{- include "p2m.rayPodTemplate" (dict "root" . "group" $rj.head "container" "ray-head" "ports" true) | trim | nindent 8 }}
    workerGroupSpecs:
      - groupName: workers
        replicas: {{ $rj.worker.replicas }}
        minReplicas: {{ $rj.worker.replicas }}
        maxReplicas: {{ $rj.worker.replicas }}
        rayStartParams:
          {{- toYaml $rj.worker.rayStartParams | nindent 10 }}
        template:
          {{- include "p2m.rayPodTemplate" (dict "root" . "group" $rj.worker "container" "ray-worker" "ports" false) | trim | nindent 10 }}
{{- end }}

{{/* Pod template of a Ray head or worker group: (dict "root" $ "group" $values "container" name "ports" bool). */}}
{{- define "p2m.rayPodTemplate" -}}
{{- $root := .root }}
{{- $rj := $root.Values.trainer.rayJob }}
metadata:
  labels:
    {{- include "p2m.selectorLabels" (dict "root" $root "component" "training") | nindent 4 }}
spec:
  serviceAccountName: {{ include "p2m.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $rj.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .container }}
      image: {{ include "p2m.workloadImage" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- if .ports }}
      ports:
        - name: gcs-server
          containerPort: 6379
          protocol: TCP
        - name: dashboard
          containerPort: 8265
          protocol: TCP
        - name: client
          containerPort: 10001
          protocol: TCP
      {{- end }}
      env:
        {{- include "p2m.baseEnv" $root | nindent 8 }}
      resources:
        {{- include "p2m.gpuResources" (dict "root" $root "resources" .group.resources "gpus" .group.gpus) | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "p2m.baseVolumeMounts" $root | nindent 8 }}
        {{- include "p2m.shmVolumeMount" $root | nindent 8 }}
  volumes:
    {{- include "p2m.baseVolumes" $root | nindent 4 }}
    {{- include "p2m.shmVolume" (dict "size" .group.shmSize) | nindent 4 }}
  {{- with (include "p2m.nodeSelector" (dict "root" $root "nodeSelector" .group.nodeSelector "gpus" .group.gpus) | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with (include "p2m.tolerations" (dict "root" $root "tolerations" .group.tolerations "gpus" .group.gpus) | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end }}
