{{/* Object names are fixed ("kaito-" + name, as kustomize's namePrefix): the controller's
defaults name the webhook Service, Secret and configurations it manages. */}}
{{- define "kaito.name" -}}
{{- printf "kaito-%s" .name -}}
{{- end -}}

{{/* Labels on every object: kustomize's common labels plus Helm's bookkeeping. */}}
{{- define "kaito.labels" -}}
app.kubernetes.io/name: kaito
app.kubernetes.io/part-of: kaito
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kaito.featureGates" -}}
{{- $gates := list -}}
{{- range $k, $v := .Values.featureGates -}}
{{- $gates = append $gates (printf "%s=%t" $k $v) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{- define "kaito.selfSignedCerts" -}}
{{- if eq .Values.webhook.certs "self-signed" -}}true{{- else if eq .Values.webhook.certs "cert-manager" -}}{{- else -}}
{{- fail (printf "webhook.certs %q: use self-signed or cert-manager" .Values.webhook.certs) -}}
{{- end -}}
{{- end -}}
