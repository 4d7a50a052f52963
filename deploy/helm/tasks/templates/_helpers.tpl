{{/* ---------------------------------------------------------------------------
Names
--------------------------------------------------------------------------- */}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "tasks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name alone when it already contains
the chart name; fullnameOverride wins. Truncated to leave room for suffixes. */}}
{{- define "tasks.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The admin listener's Service: <fullname>-admin. */}}
{{- define "tasks.adminServiceName" -}}
{{- printf "%s-admin" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tasks.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.postgresql.headlessName" -}}
{{- printf "%s-postgresql-hl" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.testName" -}}
{{- printf "%s-test" (include "tasks.fullname" .) -}}
{{- end -}}

{{- define "tasks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tasks.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Labels. Selector labels are only name + instance (+ component, which tells the
app from the database); they never change across upgrades.
--------------------------------------------------------------------------- */}}

{{- define "tasks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tasks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tasks.labels" -}}
helm.sh/chart: {{ include "tasks.chart" . }}
{{ include "tasks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "tasks.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels and selector of one component: (dict "ctx" $ "component" "backend") */}}
{{- define "tasks.componentLabels" -}}
{{ include "tasks.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of the PostgreSQL pod template: no chart version, appVersion or
commonLabels, so a release that changes only the app never changes the database's pod
template (which would restart it). (dict "ctx" $ "component" "database") */}}
{{- define "tasks.stableComponentLabels" -}}
{{ include "tasks.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ include "tasks.name" .ctx }}
{{- end -}}

{{- define "tasks.componentSelectorLabels" -}}
{{ include "tasks.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Common metadata: name, namespace, labels, annotations.
(dict "ctx" $ "name" NAME "component" COMPONENT "annotations" MAP "labels" MAP) */}}
{{- define "tasks.metadata" -}}
name: {{ .name }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "tasks.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 2 }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (.annotations | default dict) .ctx.Values.commonAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Images: registry/repository:tag@digest; the digest wins at pull time.
--------------------------------------------------------------------------- */}}
{{- define "tasks.imageRef" -}}
{{- $img := .image -}}
{{- if and $img.requireDigest (not $img.digest) -}}
{{- fail (printf "%s.requireDigest: this environment deploys by digest only (a tag can be moved, a digest cannot); pass the digest of the pushed image, e.g. --set %s.digest=sha256:<64 hex digits> (the image workflow prints it)" .path .path) -}}
{{- end -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}{{- $repo = printf "%s/%s" $img.registry $img.repository -}}{{- end -}}
{{- $tag := $img.tag | default .default | toString -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $repo $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "tasks.image" -}}
{{- include "tasks.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion "path" "image") -}}
{{- end -}}

{{- define "tasks.postgresql.image" -}}
{{- include "tasks.imageRef" (dict "image" .Values.postgresql.image "default" "17" "path" "postgresql.image") -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Database connection, from the in-chart PostgreSQL or externalDatabase.
--------------------------------------------------------------------------- */}}
{{- define "tasks.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "tasks.postgresql.fullname" . -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.port" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.service.port -}}
{{- else -}}
{{- .Values.externalDatabase.port -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.name" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.auth.database -}}
{{- else -}}
{{- .Values.externalDatabase.name -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.user" -}}
{{- if .Values.postgresql.enabled -}}
{{- .Values.postgresql.auth.username -}}
{{- else -}}
{{- .Values.externalDatabase.user -}}
{{- end -}}
{{- end -}}

{{/* The in-chart server: verify-full against the CA of its TLS Secret when
postgresql.tls.enabled; otherwise plain (traffic between app and database pods only,
with the NetworkPolicy on). */}}
{{- define "tasks.database.sslmode" -}}
{{- if .Values.postgresql.enabled -}}
{{- if .Values.postgresql.tls.enabled -}}verify-full{{- else -}}disable{{- end -}}
{{- else -}}
{{- .Values.externalDatabase.sslmode -}}
{{- end -}}
{{- end -}}

{{/* Where the CA of the database's certificate is mounted in the app (and backup) pods. */}}
{{- define "tasks.database.caDir" -}}/var/run/tasks/database-ca{{- end -}}

{{/* The volume source of the CA the chart mounts itself, as YAML (empty: none). */}}
{{- define "tasks.database.caVolume" -}}
{{- if .Values.postgresql.enabled -}}
{{- if .Values.postgresql.tls.enabled -}}
secret:
  secretName: {{ include "tasks.postgresql.tlsSecretName" . }}
  defaultMode: 0444
  items:
    - key: ca.crt
      path: ca.crt
{{- end -}}
{{- else -}}
{{- $ca := .Values.externalDatabase.ca -}}
{{- if $ca.secretName -}}
secret:
  secretName: {{ $ca.secretName }}
  defaultMode: 0444
  items:
    - key: {{ $ca.key }}
      path: ca.crt
{{- else if $ca.configMapName -}}
configMap:
  name: {{ $ca.configMapName }}
  defaultMode: 0444
  items:
    - key: {{ $ca.key }}
      path: ca.crt
{{- end -}}
{{- end -}}
{{- end -}}

{{/* CA file of the connection (empty: none, or the bundled public roots). */}}
{{- define "tasks.database.caFile" -}}
{{- if include "tasks.database.caVolume" . -}}
{{- printf "%s/ca.crt" (include "tasks.database.caDir" .) -}}
{{- else if not .Values.postgresql.enabled -}}
{{- .Values.externalDatabase.caFile -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
In-chart PostgreSQL: TLS, configuration, scripts.
--------------------------------------------------------------------------- */}}
{{- define "tasks.postgresql.tlsSecretName" -}}
{{- .Values.postgresql.tls.existingSecret | default (printf "%s-tls" (include "tasks.postgresql.fullname" .)) -}}
{{- end -}}

{{- define "tasks.postgresql.configName" -}}
{{- printf "%s-postgresql-config" (include "tasks.fullname" .) -}}
{{- end -}}

{{/* A Kubernetes memory quantity in MiB (Ki, Mi, Gi, Ti, k, M, G, T or bytes). */}}
{{- define "tasks.mebibytes" -}}
{{- $q := toString . -}}
{{- $units := list (list "Ki" 0.0009765625) (list "Mi" 1.0) (list "Gi" 1024.0) (list "Ti" 1048576.0) (list "k" 0.00095367431640625) (list "M" 0.95367431640625) (list "G" 953.67431640625) (list "T" 953674.31640625) -}}
{{- $mib := 0.0 -}}
{{- $done := false -}}
{{- range $units -}}
{{- if and (not $done) (hasSuffix (index . 0) $q) -}}
{{- $mib = mulf (float64 (trimSuffix (index . 0) $q)) (index . 1) -}}
{{- $done = true -}}
{{- end -}}
{{- end -}}
{{- if not $done -}}{{- $mib = divf (float64 $q) 1048576.0 -}}{{- end -}}
{{- int64 $mib -}}
{{- end -}}

{{/* The PostgreSQL settings as a map: postgresql.configuration over defaults sized to
the container's memory limit M: shared_buffers M/4, effective_cache_size 3M/4,
maintenance_work_mem M/16 (at least 64MB), work_mem (3M/4)/(2 x max_connections) (at
least 4MB). */}}
{{- define "tasks.postgresql.settings" -}}
{{- $pg := .Values.postgresql -}}
{{- $conf := deepCopy ($pg.configuration | default dict) -}}
{{- $mem := int64 (include "tasks.mebibytes" $pg.resources.limits.memory) -}}
{{- $maxConn := int64 (include "tasks.int" (get $conf "max_connections" | default 100)) -}}
{{- $defaults := dict
      "max_connections" $maxConn
      "shared_buffers" (printf "%dMB" (div $mem 4))
      "effective_cache_size" (printf "%dMB" (div (mul $mem 3) 4))
      "maintenance_work_mem" (printf "%dMB" (max 64 (div $mem 16)))
      "work_mem" (printf "%dMB" (max 4 (div (div (mul $mem 3) 4) (mul 2 $maxConn)))) -}}
{{- $merged := merge $conf $defaults -}}
{{- $out := dict -}}
{{- range $k, $v := $merged -}}
{{- if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) -}}
{{- $_ := set $out $k (include "tasks.int" $v) -}}
{{- else -}}
{{- $_ := set $out $k (toString $v) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The app's largest connection count against PostgreSQL (the budget):
pods = HPA maxReplicas (or replicaCount) + the rolling update's surge (rounded up),
per pod = pool (config.database.poolMaxSize, or the binary's default: 4 per worker,
between 4 and 32) + one pipelined reader per worker + one migration connection at
start. Workers: config.http.workers, or the CPU limit rounded up. Output: YAML. */}}
{{- define "tasks.connectionBudget" -}}
{{- $v := .Values -}}
{{- $replicas := int64 (include "tasks.int" (ternary $v.autoscaling.maxReplicas $v.replicaCount $v.autoscaling.enabled)) -}}
{{- $surgeRaw := toString $v.updateStrategy.rollingUpdate.maxSurge -}}
{{- $surge := 0 -}}
{{- if hasSuffix "%" $surgeRaw -}}
{{- $surge = div (add (mul (int64 (trimSuffix "%" $surgeRaw)) $replicas) 99) 100 -}}
{{- else -}}
{{- $surge = int64 (include "tasks.int" $surgeRaw) -}}
{{- end -}}
{{- $workers := int64 (include "tasks.int" $v.config.http.workers) -}}
{{- if eq $workers 0 -}}
{{- $cpu := toString (dig "limits" "cpu" "" $v.resources) -}}
{{- if hasSuffix "m" $cpu -}}
{{- $workers = div (add (int64 (trimSuffix "m" $cpu)) 999) 1000 -}}
{{- else -}}
{{- $workers = int64 (ceil (float64 $cpu)) -}}
{{- end -}}
{{- $workers = max 1 $workers -}}
{{- end -}}
{{- $pool := int64 (include "tasks.int" $v.config.database.poolMaxSize) -}}
{{- if eq $pool 0 -}}{{- $pool = min 32 (max 4 (mul $workers 4)) -}}{{- end -}}
{{- $migrate := ternary 1 0 (eq (toString $v.config.database.migrateOnStart) "true") -}}
{{- $perPod := add $pool $workers $migrate -}}
{{- $settings := include "tasks.postgresql.settings" . | fromYaml -}}
{{- $max := int64 (include "tasks.int" (get $settings "max_connections")) -}}
{{- $su := int64 (include "tasks.int" (get $settings "superuser_reserved_connections" | default 3)) -}}
{{- $reserve := int64 (include "tasks.int" $v.postgresql.connectionBudget.reserve) -}}
pods: {{ add $replicas $surge }}
replicas: {{ $replicas }}
surge: {{ $surge }}
pool: {{ $pool }}
workers: {{ $workers }}
migrate: {{ $migrate }}
perPod: {{ $perPod }}
total: {{ mul (add $replicas $surge) $perPod }}
maxConnections: {{ $max }}
superuserReserved: {{ $su }}
reserve: {{ $reserve }}
available: {{ sub (sub $max $su) $reserve }}
{{- end -}}

{{/* Values object holding the credential settings of the active database. */}}
{{- define "tasks.database.authPrefix" -}}
{{- if .Values.postgresql.enabled -}}postgresql.auth{{- else -}}externalDatabase{{- end -}}
{{- end -}}

{{- define "tasks.database.auth" -}}
{{- if .Values.postgresql.enabled -}}
{{- toYaml .Values.postgresql.auth -}}
{{- else -}}
{{- toYaml .Values.externalDatabase -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when the chart renders the credentials Secret itself. */}}
{{- define "tasks.database.createSecret" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if and (not $auth.existingSecret) $auth.password -}}true{{- end -}}
{{- end -}}

{{- define "tasks.database.secretName" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if $auth.existingSecret -}}
{{- $auth.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "tasks.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tasks.database.secretKey" -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- $auth.passwordKey | default "password" -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Shutdown: one source of truth. The env vars and the grace period both come from
config.shutdown; the kubelet waits drain + timeout + margin before SIGKILL.
--------------------------------------------------------------------------- */}}
{{- define "tasks.terminationGracePeriodSeconds" -}}
{{- $s := .Values.config.shutdown -}}
{{- add (include "tasks.int" $s.drainDelaySecs) (include "tasks.int" $s.timeoutSecs) (include "tasks.int" $s.graceMarginSecs) -}}
{{- end -}}

{{/* A number as an integer string: values may arrive as float64 (printed as 1e+06
for large numbers) or, with Helm 3, as json.Number (a non-empty string is "true"
in an `if`). Never test or print a numeric value without it. */}}
{{- define "tasks.int" -}}
{{- . | toString | float64 | int64 -}}
{{- end -}}

{{/* Replicas the PDB has to live with: the HPA minimum or replicaCount. */}}
{{- define "tasks.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- include "tasks.int" .Values.autoscaling.minReplicas -}}
{{- else -}}
{{- include "tasks.int" .Values.replicaCount -}}
{{- end -}}
{{- end -}}

{{/* Port of the OTLP endpoint URL (explicit port, else 443 for https, else the
protocol's default: 4317 for grpc, 4318 for http/protobuf). */}}
{{- define "tasks.otlpPort" -}}
{{- $u := urlParse .Values.otel.endpoint -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}
{{- last $hostport -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else if eq .Values.otel.protocol "grpc" -}}
4317
{{- else -}}
4318
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Validation that a JSON schema cannot express. Included by every template that
depends on it, so `helm template` fails early with a message naming the value.
--------------------------------------------------------------------------- */}}
{{- define "tasks.validate" -}}
{{- $pg := .Values.postgresql -}}
{{- $ext := .Values.externalDatabase -}}
{{- if and (not $pg.enabled) (not $ext.host) -}}
{{- fail "no database configured: set postgresql.enabled=true (in-chart PostgreSQL) or externalDatabase.host (external database)" -}}
{{- end -}}
{{- if and $pg.enabled $ext.host -}}
{{- fail "two databases configured: externalDatabase.host is set while postgresql.enabled=true; set postgresql.enabled=false to use the external database, or clear externalDatabase.host" -}}
{{- end -}}
{{- $prefix := include "tasks.database.authPrefix" . -}}
{{- $auth := include "tasks.database.auth" . | fromYaml -}}
{{- if and $auth.existingSecret $auth.password -}}
{{- fail (printf "ambiguous database credentials: set only one of %s.existingSecret and %s.password" $prefix $prefix) -}}
{{- end -}}
{{- if not (or $auth.existingSecret $auth.password) -}}
{{- fail (printf "no database password: set %s.existingSecret (a Secret holding key %s.passwordKey) or %s.password; the chart never generates credentials" $prefix $prefix $prefix) -}}
{{- end -}}
{{- if and .Values.pdb.enabled (ne (toString .Values.pdb.minAvailable) "") -}}
{{- $replicas := int (include "tasks.minReplicas" .) -}}
{{- $min := toString .Values.pdb.minAvailable -}}
{{- $pods := 0 -}}
{{- if hasSuffix "%" $min -}}
{{- /* Kubernetes rounds a percentage of pods up: ceil(p * replicas / 100). */ -}}
{{- $pods = div (add (mul (int (trimSuffix "%" $min)) $replicas) 99) 100 -}}
{{- else -}}
{{- $pods = int (include "tasks.int" .Values.pdb.minAvailable) -}}
{{- end -}}
{{- if ge (int $pods) $replicas -}}
{{- fail (printf "pdb.minAvailable (%v, %d pod(s)) must be lower than the replica count (%d), or the budget blocks every eviction (node drains hang)" .Values.pdb.minAvailable (int $pods) $replicas) -}}
{{- end -}}
{{- end -}}
{{- range $i, $env := .Values.extraEnv -}}
{{- if and $env.valueFrom $env.valueFrom.secretKeyRef -}}
{{- fail (printf "extraEnv[%d] (%s) reads a Secret into the environment; secrets are mounted as files (database.existingSecret, or extraVolumes with extraVolumeMounts), where a rotation needs no restart and the value stays out of the process environment" $i $env.name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int (include "tasks.int" .Values.autoscaling.minReplicas)) (int (include "tasks.int" .Values.autoscaling.maxReplicas))) -}}
{{- fail (printf "autoscaling.minReplicas (%v) is greater than autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- $cpu := int (include "tasks.int" .Values.autoscaling.targetCPUUtilizationPercentage) -}}
{{- $mem := int (include "tasks.int" .Values.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- if and .Values.autoscaling.enabled (eq (add $cpu $mem) 0) -}}
{{- fail "autoscaling.enabled needs a metric: set autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if eq (include "tasks.int" .Values.config.http.port) (include "tasks.int" .Values.config.admin.port) -}}
{{- fail "config.http.port and config.admin.port must differ" -}}
{{- end -}}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) -}}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs (the Gateway to attach to)" -}}
{{- end -}}
{{- if and (eq $ext.sslmode "verify-full") (not $pg.enabled) (not $ext.caFile) (not $ext.ca.secretName) (not $ext.ca.configMapName) -}}
{{- fail "externalDatabase.sslmode=verify-full needs the CA of the database's certificate: set externalDatabase.ca.secretName or externalDatabase.ca.configMapName (mounted by the chart), or externalDatabase.caFile (mounted by you with extraVolumes/extraVolumeMounts)" -}}
{{- end -}}
{{- if and (not $pg.enabled) $ext.caFile (or $ext.ca.secretName $ext.ca.configMapName) -}}
{{- fail "externalDatabase.caFile and externalDatabase.ca.* both name a CA: set only one" -}}
{{- end -}}
{{- if $pg.enabled -}}
{{- if and $pg.auth.password (not $pg.auth.postgresPassword) -}}
{{- fail "postgresql.auth.password needs postgresql.auth.postgresPassword too: the bootstrap superuser (postgres) has its own password, used only inside the PostgreSQL pod" -}}
{{- end -}}
{{- if and $pg.auth.existingSecret $pg.auth.postgresPassword -}}
{{- fail "ambiguous database credentials: postgresql.auth.postgresPassword is set while postgresql.auth.existingSecret names the Secret (put the superuser password in its key postgresql.auth.postgresPasswordKey)" -}}
{{- end -}}
{{- if eq $pg.auth.passwordKey $pg.auth.postgresPasswordKey -}}
{{- fail "postgresql.auth.passwordKey and postgresql.auth.postgresPasswordKey must differ: the app role and the superuser have separate passwords" -}}
{{- end -}}
{{- if and $pg.tls.enabled (not $pg.tls.existingSecret) (not $pg.tls.certManager.issuerRef.name) -}}
{{- fail "postgresql.tls.enabled needs a certificate: set postgresql.tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt) or postgresql.tls.certManager.issuerRef.name (a cert-manager issuer)" -}}
{{- end -}}
{{- if $pg.connectionBudget.enabled -}}
{{- $b := include "tasks.connectionBudget" . | fromYaml -}}
{{- if gt (int64 $b.total) (int64 $b.available) -}}
{{- fail (printf "connection budget exceeded: the app can open %d connections (%d pods = %d replicas + %d surge, x %d per pod = pool %d + %d pipelined readers + %d migration), but PostgreSQL admits %d (max_connections %d - superuser_reserved_connections %d - postgresql.connectionBudget.reserve %d); lower config.database.poolMaxSize or the replicas, or raise postgresql.configuration.max_connections" (int64 $b.total) (int64 $b.pods) (int64 $b.replicas) (int64 $b.surge) (int64 $b.perPod) (int64 $b.pool) (int64 $b.workers) (int64 $b.migrate) (int64 $b.available) (int64 $b.maxConnections) (int64 $b.superuserReserved) (int64 $b.reserve)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------------------
Shared pod-spec partial of the app pods (Deployment and Helm test pod):
identity, hardened security context, pull secrets and scheduling basics.
--------------------------------------------------------------------------- */}}
{{- define "tasks.podSpecCommon" -}}
automountServiceAccountToken: false
# No Docker-link variables: a Service named "tasks" would inject TASKS_SERVICE_HOST,
# TASKS_PORT_8080_TCP… into the TASKS_ namespace the configuration owns.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.podSecurityContext.runAsUser }}
  runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
  fsGroup: {{ .Values.podSecurityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Hardened container securityContext (app and test containers). */}}
{{- define "tasks.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}
