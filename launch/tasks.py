"""Celery entry points of the launch console: one service call each, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from launch import services

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(name="launch.notify_approvers", **TASK_OPTIONS)
def notify_approvers() -> dict[str, int]:
    return services.approval_requests_notify()


@shared_task(name="launch.send_launch_report", **TASK_OPTIONS)
def send_launch_report() -> dict[str, str]:
    return services.launch_report_send()
