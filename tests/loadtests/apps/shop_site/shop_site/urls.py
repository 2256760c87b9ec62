from django.contrib.auth import views as auth_views
from django.urls import path

from shop import views

urlpatterns = [
    path("", views.home),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orders/", views.orders, name="orders"),
    path("orders/new/", views.new_order),
    path("api/token/", views.token),
    path("api/orders/", views.api_orders),
]
