/* Ingot web UI: the live parts of the server-rendered pages. No framework, no build step.
 *
 * - Tasks on the page (progress bars, state badges) are polled through GET /rest/tasks/{id}
 *   about once a second while any of them is active.
 * - Buttons that change state call the REST API with the session cookie, the session's CSRF
 *   token (from <meta name="csrf-token">) in X-CSRF-Token, and X-API-Version.
 * - Timestamps (<time datetime>) are shown in the browser's local time.
 */
(function () {
  "use strict";

  var API_VERSION = "4600";
  var POLL_MS = 1000;
  var NEW_TASK_POLL_MS = 5000;
  var ACTIVE = ["New", "Starting", "Pending", "Running", "Suspended", "Stopping"];
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";

  function isActive(state) { return ACTIVE.indexOf(state) >= 0; }

  function slug(text) { return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, ""); }

  function each(selector, fn) { Array.prototype.forEach.call(document.querySelectorAll(selector), fn); }

  function byData(name, value) {
    return document.querySelectorAll("[" + name + '="' + (window.CSS && CSS.escape ? CSS.escape(value) : value) + '"]');
  }

  /* fetch() against /rest; rejects with an Error carrying the OneView message and HTTP status. */
  function api(method, path, body) {
    var headers = { "Accept": "application/json", "X-API-Version": API_VERSION };
    var init = { method: method, headers: headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") {
      headers["X-CSRF-Token"] = csrf;
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    return fetch(path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) {
          window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
        }
        if (!response.ok) {
          var error = new Error(data.message || ("HTTP " + response.status));
          error.status = response.status;
          error.details = data.details || "";
          throw error;
        }
        return data;
      });
    });
  }

  function showError(message) {
    var box = document.querySelector("[data-action-error]");
    if (box) {
      box.textContent = message;
      box.hidden = false;
    } else {
      window.alert(message);
    }
  }

  /* --- timestamps ------------------------------------------------------------------------- */
  function localTimes(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("time[datetime]"), function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime()) || el.dataset.local) { return; }
      el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
      el.dataset.local = "1";
    });
  }

  /* --- task progress ---------------------------------------------------------------------- */
  function activeTaskIds() {
    var ids = [];
    each("[data-task-state]", function (el) {
      var id = el.getAttribute("data-task-state");
      if (isActive(el.getAttribute("data-state")) && ids.indexOf(id) < 0) { ids.push(id); }
    });
    return ids;
  }

  function applyTask(task) {
    var pct = Math.max(0, Math.min(100, Number(task.percentComplete) || 0));
    Array.prototype.forEach.call(byData("data-task-id", task.id), function (bar) {
      bar.setAttribute("aria-valuenow", String(pct));
      bar.setAttribute("data-state", task.taskState);
      var native = bar.querySelector("progress");
      if (native) { native.value = pct; }
      var label = bar.querySelector(".progress-label");
      if (label) { label.textContent = pct + " %"; }
    });
    Array.prototype.forEach.call(byData("data-task-state", task.id), function (badge) {
      badge.textContent = task.taskState;
      badge.setAttribute("data-state", task.taskState);
      badge.className = "badge state-" + slug(task.taskState);
    });
    Array.prototype.forEach.call(byData("data-task-status", task.id), function (el) {
      el.textContent = task.taskStatus || "";
    });
    if (!task.isCancellable) {
      Array.prototype.forEach.call(byData("data-cancel-task", task.id), function (btn) { btn.remove(); });
    }
    var list = byData("data-progress-updates", task.id)[0];
    if (list && Array.isArray(task.progressUpdates)) { appendUpdates(list, task.progressUpdates); }
    // Page scripts (hardware.js) react to tasks they started, e.g. re-read a server when its task ends.
    document.dispatchEvent(new CustomEvent("ingot:task", { detail: task }));
  }

  function appendUpdates(list, updates) {
    var seen = {};
    Array.prototype.forEach.call(list.querySelectorAll("[data-seq]"), function (li) { seen[li.dataset.seq] = true; });
    updates.forEach(function (update) {
      if (seen[String(update.id)]) { return; }
      var placeholder = list.querySelector("li:not([data-seq])");
      if (placeholder) { placeholder.remove(); }
      var li = document.createElement("li");
      li.dataset.seq = String(update.id);
      var time = document.createElement("time");
      time.setAttribute("datetime", update.timestamp || "");
      time.textContent = update.timestamp || "";
      var stamp = document.createElement("span");
      stamp.className = "muted small";
      stamp.appendChild(time);
      li.appendChild(stamp);
      li.appendChild(document.createTextNode(" " + update.statusUpdate));
      list.appendChild(li);
      localTimes(li);
    });
  }

  var pollTimer = null;

  function pollTasks() {
    pollTimer = null;
    var ids = activeTaskIds();
    if (!ids.length) { return; }
    Promise.all(ids.map(function (id) {
      return api("GET", "/rest/tasks/" + encodeURIComponent(id)).then(applyTask, function (err) {
        if (err.status === 404) {  // deleted meanwhile: stop asking
          Array.prototype.forEach.call(byData("data-task-state", id), function (b) { b.setAttribute("data-state", "Gone"); });
        }
      });
    })).then(function () {
      var finished = ids.filter(function (id) { return activeTaskIds().indexOf(id) < 0; });
      if (finished.length && document.querySelector("[data-reload-when-done]")) {
        window.setTimeout(function () { window.location.reload(); }, 600);
        return;
      }
      schedulePoll();
    });
  }

  function schedulePoll() {
    if (pollTimer === null && activeTaskIds().length) {
      pollTimer = window.setTimeout(pollTasks, POLL_MS);
    }
  }

  /* On the dashboard and the task list: say so when a task newer than the page has started. */
  function watchNewTasks() {
    var list = document.querySelector("[data-task-list][data-newest]");
    if (!list) { return; }
    var newest = list.getAttribute("data-newest");
    var notice = document.querySelector("[data-new-tasks]");
    function check() {
      api("GET", "/rest/tasks?count=1").then(function (page) {
        var top = page.members && page.members[0];
        if (top && top.id !== newest && notice) {
          notice.hidden = false;
          return;
        }
        window.setTimeout(check, NEW_TASK_POLL_MS);
      }, function () { window.setTimeout(check, NEW_TASK_POLL_MS * 2); });
    }
    window.setTimeout(check, NEW_TASK_POLL_MS);
  }

  /* --- buttons ---------------------------------------------------------------------------- */
  function busy(button, on) {
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) { return; }

    var cancel = target.closest("[data-cancel-task]");
    if (cancel) {
      var id = cancel.getAttribute("data-cancel-task");
      if (!window.confirm("Cancel task " + (cancel.getAttribute("data-task-name") || id) + "?")) { return; }
      busy(cancel, true);
      api("PUT", "/rest/tasks/" + encodeURIComponent(id), { taskState: "Cancelling" }).then(function (task) {
        applyTask(task);
        schedulePoll();
      }, function (err) { busy(cancel, false); showError(err.message); });
      return;
    }

    var clear = target.closest("[data-clear-alert]");
    if (clear) {
      var alertId = clear.getAttribute("data-clear-alert");
      busy(clear, true);
      api("PUT", "/rest/alerts/" + encodeURIComponent(alertId), { alertState: "Cleared" }).then(function (alert) {
        Array.prototype.forEach.call(byData("data-alert-state", alertId), function (el) {
          el.textContent = alert.alertState;
          el.className = "badge alert-" + slug(alert.alertState);
        });
        Array.prototype.forEach.call(byData("data-alert-cleared", alertId), function (el) {
          el.textContent = alert.clearedByUser ? "by " + alert.clearedByUser : "";
        });
        clear.remove();
      }, function (err) { busy(clear, false); showError(err.message); });
      return;
    }

    var backup = target.closest("[data-create-backup]");
    if (backup) {
      busy(backup, true);
      backup.textContent = "Starting…";
      api("POST", "/rest/backups", {}).then(function () {
        window.location.reload();  // the new task is listed with its progress bar
      }, function (err) { busy(backup, false); backup.textContent = "Create backup"; showError(err.message); });
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select && select.matches && select.matches("[data-autosubmit]") && select.form) { select.form.submit(); }
  });

  // For page scripts loaded after this one (static/hardware.js).
  /* A multipart upload (part "file") with the bytes sent reported as they go, which fetch() cannot
     do. Resolves with the JSON of a 202; rejects with an Error carrying the OneView message. */
  function upload(path, file, onProgress) {
    return new Promise(function (resolve, reject) {
      var body = new FormData();
      body.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      xhr.setRequestHeader("X-API-Version", API_VERSION);
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) { onProgress(event.loaded, event.total); }
      });
      xhr.addEventListener("load", function () {
        var data = {};
        try { data = JSON.parse(xhr.responseText); } catch (ignored) { data = {}; }
        if (xhr.status === 202) { resolve(data); return; }
        reject(new Error(data.message || ("The upload failed (HTTP " + xhr.status + ").")));
      });
      xhr.addEventListener("error", function () {
        reject(new Error("The upload was interrupted; nothing was added."));
      });
      xhr.send(body);
    });
  }

  window.Ingot = {
    api: api, applyTask: applyTask, schedulePoll: schedulePoll, showError: showError, busy: busy,
    slug: slug, isActive: isActive, localTimes: localTimes, csrf: csrf, upload: upload
  };

  function start() {
    localTimes(document);
    schedulePoll();
    watchNewTasks();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
