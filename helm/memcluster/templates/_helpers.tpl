{{/*
Names, labels, addresses and the hardened pieces every pod template shares.
*/}}

{{- define "memcluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every object. Kept to 40 characters: KubeRay derives pod and
service names from the RayCluster name (<name>-head-svc, <name>-<group>-worker-<hash>).
It is a DNS-1035 label, as Service and RayCluster names must be: dots become dashes, and a
name that does not start with a letter (a release called "1st") gets the prefix "mc-".
*/}}
{{- define "memcluster.fullname" -}}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- $full = .Release.Name }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- end }}
{{- $full = $full | lower | replace "." "-" }}
{{- if not (regexMatch "^[a-z]" $full) }}
{{- $full = printf "mc-%s" $full }}
{{- end }}
{{- $full | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "memcluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "redis").
*/}}
{{- define "memcluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memcluster.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The standard labels every object carries. Call with (dict "ctx" $ "component" "redis").
*/}}
{{- define "memcluster.labels" -}}
{{ include "memcluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: memcluster
helm.sh/chart: {{ include "memcluster.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select every pod of this release (for the NetworkPolicy). */}}
{{- define "memcluster.releaseSelector" -}}
app.kubernetes.io/name: {{ include "memcluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "memcluster.clusterName" -}}
{{- default (include "memcluster.fullname" .) .Values.memcluster.clusterName }}
{{- end }}

{{- define "memcluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "memcluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- Ray ---- */}}

{{- define "memcluster.rayClusterName" -}}
{{- include "memcluster.fullname" . }}
{{- end }}

{{/* The head Service KubeRay creates for a RayCluster. */}}
{{- define "memcluster.rayHeadService" -}}
{{- printf "%s-head-svc" (include "memcluster.rayClusterName" .) }}
{{- end }}

{{- define "memcluster.rayHeadHost" -}}
{{- printf "%s.%s.svc.%s" (include "memcluster.rayHeadService" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Ray Client address of the head: what `memcluster up` and remote drivers use. */}}
{{- define "memcluster.rayAddress" -}}
{{- printf "ray://%s:10001" (include "memcluster.rayHeadHost" .) }}
{{- end }}

{{- define "memcluster.rayTokenSecretName" -}}
{{- default (printf "%s-ray-token" (include "memcluster.fullname" .)) .Values.ray.auth.existingSecret }}
{{- end }}

{{- define "memcluster.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/* ---------------------------------------------------------------- Redis -- */}}

{{- define "memcluster.redisServiceName" -}}
{{- printf "%s-redis" (include "memcluster.fullname" .) }}
{{- end }}

{{- define "memcluster.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- default (printf "%s-redis" (include "memcluster.fullname" .)) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "memcluster.redisSecretKey" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* host:port of Redis. */}}
{{- define "memcluster.redisHostPort" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc.%s:6379" (include "memcluster.redisServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- $url := urlParse .Values.externalRedis.url }}
{{- if contains ":" $url.host }}
{{- $url.host }}
{{- else }}
{{- printf "%s:6379" $url.host }}
{{- end }}
{{- end }}
{{- end }}

{{- define "memcluster.redisScheme" -}}
{{- if .Values.redis.enabled }}redis{{ else }}{{ (urlParse .Values.externalRedis.url).scheme }}{{ end }}
{{- end }}

{{/*
The Redis database memcluster uses: 1 on the chart's own Redis (Ray's GCS has database 0
to itself), else the one in externalRedis.url (default 0).
*/}}
{{- define "memcluster.redisDb" -}}
{{- if .Values.redis.enabled }}1{{ else }}
{{- $path := trimPrefix "/" (urlParse .Values.externalRedis.url).path }}
{{- default "0" $path }}
{{- end }}
{{- end }}

{{/*
The redis_url memcluster gets: the password is a ${MEMCLUSTER_REDIS_PASSWORD} reference
that each process resolves from its environment (injected from the Secret), never a
literal. The name keeps clear of REDIS_PASSWORD, which KubeRay reserves on the head for
GCS fault tolerance.
*/}}
{{- define "memcluster.redisUrl" -}}
{{- $user := "" }}
{{- if not .Values.redis.enabled }}
{{- $user = .Values.externalRedis.username }}
{{- end }}
{{- printf "%s://%s:${MEMCLUSTER_REDIS_PASSWORD}@%s/%s" (include "memcluster.redisScheme" .) $user (include "memcluster.redisHostPort" .) (include "memcluster.redisDb" .) }}
{{- end }}

{{/* ------------------------------------------------- security and pods ---- */}}

{{/*
A container securityContext: the values' settings with the hardened fields forced on top,
so values can never weaken them. Call with the values' securityContext dict.
*/}}
{{- define "memcluster.containerSecurityContext" -}}
{{- $hardened := dict "allowPrivilegeEscalation" false "privileged" false "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) .)) $hardened) }}
{{- end }}

{{/* A pod securityContext: values plus runAsNonRoot and RuntimeDefault seccomp. */}}
{{- define "memcluster.podSecurityContext" -}}
{{- $hardened := dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) .)) $hardened) }}
{{- end }}

{{/*
Environment of every memcluster process: the Redis password (for the reference in
redis_url), the cluster name, and extraEnv.
*/}}
{{- define "memcluster.env" -}}
- name: MEMCLUSTER_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "memcluster.redisSecretName" . }}
      key: {{ include "memcluster.redisSecretKey" . }}
- name: MEMCLUSTER_CLUSTER
  value: {{ include "memcluster.clusterName" . | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The memcluster config (and /tmp), mounted by the Ray pods and the watch pod. */}}
{{- define "memcluster.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "memcluster.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "memcluster.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/memcluster
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Bytes in a Kubernetes memory quantity (512Mi, 1G, 1000) or, with "redis" true, a Redis
memory size (640mb, 1g, 100kb: Redis' k/m/g are powers of 1000, kb/mb/gb of 1024).
Call with (dict "value" "1Gi" "redis" false); prints an integer.
*/}}
{{- define "memcluster.bytes" -}}
{{- $s := toString .value }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- if .redis }}
{{- $units = dict "" 1.0 "k" 1e3 "m" 1e6 "g" 1e9 "kb" 1024.0 "mb" 1048576.0 "gb" 1073741824.0 }}
{{- $s = lower $s }}
{{- end }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $s }}
{{- $unit := trimPrefix $number $s }}
{{- if or (not $number) (not (hasKey $units $unit)) }}
{{- fail (printf "cannot read the memory size %q" $s) }}
{{- end }}
{{- mulf (float64 $number) (get $units $unit) | int64 }}
{{- end }}

{{/* ---------------------------------------------------------- checks ------ */}}

{{/*
Cross-field checks that values.schema.json cannot express; each fails with the field.
Some mirror rules KubeRay's controller enforces (ray-operator/controllers/ray/utils/
validation.go, v1.6.0), so a bad value fails at render instead of as an
InvalidRayClusterSpec event with no pods.
*/}}
{{- define "memcluster.validate" -}}
{{- if not .Values.redis.enabled }}
{{- if not .Values.externalRedis.url }}
{{- fail "externalRedis.url: required when redis.enabled is false" }}
{{- end }}
{{- if not .Values.externalRedis.existingSecret }}
{{- fail "externalRedis.existingSecret: required when redis.enabled is false (a Secret with the Redis password)" }}
{{- end }}
{{- else }}
{{- $maxmemory := include "memcluster.bytes" (dict "value" .Values.redis.maxmemory "redis" true) | int64 }}
{{- $limit := include "memcluster.bytes" (dict "value" .Values.redis.resources.limits.memory "redis" false) | int64 }}
{{- if gt (mul $maxmemory 10) (mul $limit 9) }}
{{- fail (printf "redis.maxmemory: %s is more than 90%% of redis.resources.limits.memory (%s); Redis needs room outside maxmemory, or the kernel kills it instead of Redis refusing writes" .Values.redis.maxmemory .Values.redis.resources.limits.memory) }}
{{- end }}
{{- end }}
{{- if and .Values.ray.auth.enabled (not (semverCompare ">=2.52.0-0" .Values.ray.version)) }}
{{- fail (printf "ray.version: token authentication (ray.auth.enabled) needs Ray >= 2.52.0, got %s" .Values.ray.version) }}
{{- end }}
{{- $groups := dict }}
{{- $offered := dict }}
{{- $labelled := dict }}
{{- range $i, $g := .Values.ray.workerGroups }}
{{- if hasKey $groups $g.name }}
{{- fail (printf "ray.workerGroups[%d].name: %q is used twice" $i $g.name) }}
{{- end }}
{{- $_ := set $groups $g.name true }}
{{- if gt (int $g.minReplicas) (int $g.maxReplicas) }}
{{- fail (printf "ray.workerGroups[%d].minReplicas: must be <= maxReplicas" $i) }}
{{- end }}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) }}
{{- fail (printf "ray.workerGroups[%d].replicas: must be between minReplicas and maxReplicas" $i) }}
{{- end }}
{{- range $resource, $_ := ($g.rayResources | default dict) }}
{{- $_ := set $offered $resource true }}
{{- end }}
{{- range $label, $_ := ($g.rayLabels | default dict) }}
{{- $_ := set $labelled $label true }}
{{- end }}
{{- end }}
{{- with .Values.memcluster.placement }}
{{- range $resource, $_ := (.resources | default dict) }}
{{- if not (hasKey $offered $resource) }}
{{- fail (printf "memcluster.placement.resources: no worker group offers %q; add it to a group's rayResources, or no node may host shards" $resource) }}
{{- end }}
{{- end }}
{{- if and (ne .domain "node") (not (hasPrefix "ray.io/" .domain)) (not (hasKey $labelled .domain)) }}
{{- fail (printf "memcluster.placement.domain: no worker group sets the Ray node label %q (ray.workerGroups[].rayLabels)" .domain) }}
{{- end }}
{{- end }}
{{- $sources := dict }}
{{- $defaults := 0 }}
{{- range $i, $s := .Values.memcluster.sources }}
{{- if hasKey $sources $s.name }}
{{- fail (printf "memcluster.sources[%d].name: %q is used twice" $i $s.name) }}
{{- end }}
{{- $_ := set $sources $s.name true }}
{{- if $s.default }}{{ $defaults = add1 $defaults }}{{ end }}
{{- $shards := int (default 1 $s.shards) }}
{{- if and (hasKey $s "replicas") (not (kindIs "invalid" $s.replicas)) }}
{{- if gt (int $s.replicas) $shards }}
{{- fail (printf "memcluster.sources[%d].replicas: must be <= shards (%d); each replica lives on a different shard" $i $shards) }}
{{- end }}
{{- if and (hasKey $s "write_quorum") (not (kindIs "invalid" $s.write_quorum)) }}
{{- if gt (int $s.write_quorum) (int $s.replicas) }}
{{- fail (printf "memcluster.sources[%d].write_quorum: must be <= replicas" $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt $defaults 1 }}
{{- fail "memcluster.sources: at most one source may be the default" }}
{{- end }}
{{- if and (or .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled) (not .Values.metrics.enabled) }}
{{- fail "metrics.enabled: the ServiceMonitor and PodMonitor scrape what metrics.enabled serves; turn it on" }}
{{- end }}
{{- end }}
