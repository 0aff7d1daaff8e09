"""URL map: the labeling UI at /, the admin at /admin/, the API at /api/."""

from django.contrib import admin
from django.urls import include, path

from annotation.auth import admin_login

urlpatterns = [
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/", include("annotation.api.urls")),
    path("", include("annotation.urls")),
]

handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"
