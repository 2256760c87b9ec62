from django.db import models


class Account(models.Model):
    username = models.TextField(unique=True)
    email = models.TextField(unique=True)
    name = models.TextField()

    class Meta:
        managed = False  # the test creates the table
        db_table = "accounts"
