"""Celery entry points of the launch console: one service call each, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from launch import services


@shared_task(name="launch.notify_approvers")
def notify_approvers() -> dict[str, int]:
    return services.approval_requests_notify()


@shared_task(name="launch.redeliver_approval_notices")
def redeliver_approval_notices() -> int:
    return services.approval_notices_redeliver()


@shared_task(name="launch.send_launch_report")
def send_launch_report() -> dict[str, str]:
    return services.launch_report_send()
