{{/*
The InferenceService template (KServe serving.kserve.io/v1beta1), stored in the
workload-templates ConfigMap as inferenceservice.yaml and read by the deployer
(P2M_INFERENCESERVICE_TEMPLATE). It is a complete, valid InferenceService whose predictor
runs the project's model server (`p2m serve-model`, the same image) on the model folder on the
artifacts volume. On a copy the deployer sets:
  - metadata.name (here "placeholder") and metadata.labels (it may add to these),
  - spec.predictor.containers[0].args: the model folder under the data dir, the model name
    (here /data/models/placeholder and "placeholder"), batching, and what decodes: on a CPU
    predictor llama.cpp from the student's GGUF export in deployer.precision (f32 answers as
    transformers does; q8_0 is int8), on a GPU predictor (deployer.inferenceService.gpus > 0)
    transformers on the GPU; deployer.runtime and the Deploy request's options choose,
  - the annotation prompt2model.io/runtime ("llama.cpp f32", "transformers f32"),
  - optionally spec.predictor.minReplicas/maxReplicas/scaleTarget per deployment.
Everything else comes from values: image, resources and GPUs, nodeSelector and tolerations,
the artifacts volume (read-only) at the data dir, the ServiceAccount and the autoscaling
defaults (minReplicas, maxReplicas, scaleMetric, scaleTarget).
*/}}
{{- define "p2m.inferenceservice" -}}
{{- $is := .Values.deployer.inferenceService }}
{{- include "p2m.checkGpus" (dict "root" . "gpus" $is.gpus "what" "deployer.inferenceService.gpus") }}
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: placeholder
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "p2m.componentLabels" (dict "root" . "component" "serving") | nindent 4 }}
  {{- with $is.deploymentMode }}
  annotations:
    serving.kserve.io/deploymentMode: {{ . }}
  {{- end }}
spec:
  predictor:
    minReplicas: {{ $is.minReplicas }}
    maxReplicas: {{ $is.maxReplicas }}
    scaleMetric: {{ $is.scaleMetric }}
    scaleTarget: {{ $is.scaleTarget }}
    labels:
      {{- include "p2m.selectorLabels" (dict "root" . "component" "serving") | nindent 6 }}
    serviceAccountName: {{ include "p2m.serviceAccountName" . }}
    automountServiceAccountToken: false
    enableServiceLinks: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    containers:
      - name: kserve-container
        image: {{ include "p2m.workloadImage" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        args:
          - serve-model
          - --model
          - {{ printf "%s/models/placeholder" .Values.dataDir }}
          - --name
          - placeholder
          - --host
          - 0.0.0.0
          - --http-port
          - {{ $is.port | quote }}
          - --grpc-port
          - "0"
          - --runtime
          - {{ if gt (int $is.gpus) 0 }}transformers{{ else }}{{ .Values.deployer.runtime }}{{ end }}
          - --precision
          - {{ if gt (int $is.gpus) 0 }}f32{{ else }}{{ .Values.deployer.precision | quote }}{{ end }}
        ports:
          - name: http1
            containerPort: {{ $is.port }}
            protocol: TCP
        env:
          {{- include "p2m.baseEnv" . | nindent 10 }}
        resources:
          {{- include "p2m.gpuResources" (dict "root" . "resources" $is.resources "gpus" $is.gpus) | nindent 10 }}
        securityContext:
          {{- toYaml .Values.securityContext | nindent 10 }}
        volumeMounts:
          - name: data
            mountPath: {{ .Values.dataDir }}
            readOnly: true
          - name: tmp
            mountPath: /tmp
    volumes:
      - name: data
        persistentVolumeClaim:
          claimName: {{ include "p2m.claimName" . }}
          readOnly: true
      - name: tmp
        emptyDir:
          sizeLimit: {{ .Values.tmpSize }}
    {{- with (include "p2m.nodeSelector" (dict "root" . "nodeSelector" $is.nodeSelector "gpus" $is.gpus) | trim) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with (include "p2m.tolerations" (dict "root" . "tolerations" $is.tolerations "gpus" $is.gpus) | trim) }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}
