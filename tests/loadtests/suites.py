"""Locustfiles the load tests run (written to a temporary folder by the tests)."""

TWO_ENDPOINTS = '''
from locust import HttpUser, constant, task


class Web(HttpUser):
    wait_time = constant(0.02)

    @task(2)
    def slow(self):
        self.client.get("/slow", name="/slow")

    @task(1)
    def flaky(self):
        self.client.get("/flaky/7", name="/flaky/{id}")
'''

ONE_ENDPOINT = '''
from locust import HttpUser, constant, task


class Web(HttpUser):
    wait_time = constant(0.01)

    @task
    def page(self):
        self.client.get("/page", name="/page")
'''

BROKEN_IMPORT = '''
from locust import HttpUser, task
import no_such_module_takealook_test


class Web(HttpUser):
    @task
    def page(self):
        self.client.get("/page")
'''
