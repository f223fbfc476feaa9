from django.urls import path

from . import demo, views

urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("products/<int:pk>/", views.product_detail, name="product_detail"),
    path("api/popular/", views.popular, name="popular"),
    path("stats/", views.stats, name="stats"),
    path("stats/reset/", views.reset_stats, name="reset_stats"),
    # gunicorn_demo.py
    path("demo/counter/", demo.demo_counter, name="demo_counter"),
    path("demo/state/", demo.demo_state, name="demo_state"),
    path("demo/list/", demo.demo_list, name="demo_list"),
    # pageload.py
    path("hot/", views.hot_page, name="hot_page"),
]
