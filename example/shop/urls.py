from django.urls import path

from . import views

urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("products/<int:pk>/", views.product_detail, name="product_detail"),
    path("api/popular/", views.popular, name="popular"),
    path("stats/", views.stats, name="stats"),
    path("stats/reset/", views.reset_stats, name="reset_stats"),
]
