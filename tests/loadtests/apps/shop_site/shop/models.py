from django.conf import settings
from django.db import models


class Order(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    number = models.CharField(max_length=20)
    total_cents = models.IntegerField()
    created = models.DateTimeField(auto_now_add=True)


class ApiToken(models.Model):
    """One token per user, as DRF's authtoken does: sent as "Authorization: Token <key>"."""

    key = models.CharField(max_length=40, unique=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
