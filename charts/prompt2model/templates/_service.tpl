{{/*
One p2m gRPC service: a Deployment running `p2m serve <component>` and its ClusterIP Service
(the gateway's type comes from values). Called from each service's template file as
  include "p2m.grpcService" (dict "root" $ "component" "parser")
which also defines "p2m.<component>.env", ".volumes" and ".volumeMounts" (may be empty) for
what only that service needs. Optional keys: "stateful" (one replica, Recreate, no HPA),
"serviceAccountName" (default: the release's ServiceAccount) and "apiAccess" (mount its token).
*/}}
{{- define "p2m.grpcService" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $name := include "p2m.componentName" . }}
{{- $stateful := default false .stateful }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "p2m.componentLabels" . | nindent 4 }}
spec:
  {{- if $stateful }}
  # One replica (state in SQLite or a registry on the volume): never two at once.
  replicas: 1
  strategy:
    type: Recreate
  {{- else if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "p2m.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "p2m.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/part-of: prompt2model
      annotations:
        checksum/secrets: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        checksum/templates: {{ include (print $root.Template.BasePath "/workload-templates.yaml") $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccountName | default (include "p2m.serviceAccountName" $root) }}
      # Only the trainer and the deployer with a cluster backend talk to the Kubernetes API.
      automountServiceAccountToken: {{ .apiAccess | default false }}
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ $component }}
          image: {{ include "p2m.serviceImage" (dict "root" $root "svc" $svc) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [serve, {{ $component }}, --port, {{ $svc.port | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $svc.port }}
              protocol: TCP
          env:
            - name: P2M_HOST
              value: 0.0.0.0
            - name: P2M_PORT
              value: {{ $svc.port | quote }}
            {{- include "p2m.baseEnv" $root | nindent 12 }}
            {{- with (include (printf "p2m.%s.env" $component) $root | trim) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $svc.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # gRPC health (grpc.health.v1): SERVING only once the service has loaded.
          startupProbe:
            grpc:
              port: {{ $svc.port }}
            periodSeconds: 5
            failureThreshold: 60
          readinessProbe:
            grpc:
              port: {{ $svc.port }}
            periodSeconds: 10
          livenessProbe:
            grpc:
              port: {{ $svc.port }}
            periodSeconds: 20
            failureThreshold: 3
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "p2m.baseVolumeMounts" $root | nindent 12 }}
            {{- with (include (printf "p2m.%s.volumeMounts" $component) $root | trim) }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "p2m.baseVolumes" $root | nindent 8 }}
        {{- with (include (printf "p2m.%s.volumes" $component) $root | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "p2m.componentLabels" . | nindent 4 }}
  {{- with (dig "service" "annotations" dict $svc) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ dig "service" "type" "ClusterIP" $svc }}
  {{- with (dig "service" "loadBalancerSourceRanges" list $svc) }}
  loadBalancerSourceRanges:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    {{- include "p2m.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $svc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- if and (not $stateful) $svc.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "p2m.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}
