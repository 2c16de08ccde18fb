from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from genesis import auto_refresh, health, metrics
from genesis.api import api
from genesis.metrics_auth import metrics_token_required
from genesis.middleware import get_and_head_only
from launch.admin import launch_urls

admin.site.site_header = "Genesis control plane"
admin.site.site_title = "Genesis"
admin.site.index_title = "Fine-tuned models, experiments, costs and audits"

handler403 = "genesis.forbidden.permission_denied"  # says which permission is missing
handler400 = "genesis.uploads.upload_too_large_or_bad_request"  # an upload over the limit: 413, saying it

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", get_and_head_only(metrics_token_required(metrics.metrics_view)), name="prometheus-django-metrics"),
    path("api/v1/", api.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False), name="home"),
    *launch_urls(),  # the launch board is the admin's home page
    path("admin/auto-refresh/", auto_refresh.auto_refresh_set, name="auto_refresh"),  # before admin/'s catch-all
    path("admin/", admin.site.urls),
]
