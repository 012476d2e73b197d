/* Ingot web UI: the server profile pages (profiles.html, profiles_new.html, profiles_profile.html).
 * Builds on ui.js (window.Ingot) and, for the wizard's attribute form, on plans.js
 * (Ingot.attributeForm: the deployment plan page's fields, shared rather than copied).
 *
 * - Wizard, step 3: one field per attribute the deployment plan lets a profile set, from its type
 *   and constraints (data-plan, the REST shape); passwords are never filled in. "Create and deploy"
 *   POSTs /rest/server-profiles with the values that are not blank and opens the new profile's
 *   page, where its deploy runs; a 400's nestedErrors are shown at their fields (an attribute, the
 *   name) and listed above the button, any other error (409: the server is no longer available or
 *   already has a profile) there as well.
 * - Profile page: "Apply again" (PATCH reapplyState) and "Delete" (DELETE), each after a
 *   confirmation; errors go to the page's banner. While the last task runs, ui.js polls it and its
 *   running phase; a phase that starts meanwhile is added to the timeline here (from the task's
 *   childTasks), and when the task ends the page is loaded again (after a completed Delete the
 *   profile is gone: back to the list, which says so).
 * Names, values and messages only ever go into textContent or form values, never into markup.
 */
(function () {
  "use strict";

  var I = window.Ingot;
  if (!I) { return; }

  var REAPPLY = [{op: "replace", path: "/osDeploymentSettings/reapplyState", value: "ApplyPending"}];
  var RELOAD_MS = 600;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function parseObject(text) {
    try {
      var data = JSON.parse(text || "{}");
      return data && typeof data === "object" && !Array.isArray(data) ? data : {};
    } catch (ignored) { return {}; }
  }

  /* --- the wizard's last step ------------------------------------------------------------- */
  function initWizard(form) {
    var A = I.attributeForm;
    if (!A) { return; }
    var plan = parseObject(form.getAttribute("data-plan"));
    A.render(form, plan.customAttributes || [], "The deployment plan has no attributes a profile may change.",
             {flags: false, clearable: false, passwordSet: "the plan has one: leave blank to use it"});
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("[data-save]");
      var values = A.values(form).filter(function (entry) {
        return entry.value !== null && entry.value !== A.MASK;  // blank: the plan's value
      });
      var body = {
        type: "ServerProfileV12",
        name: form.querySelector('[data-field="name"]').value.trim(),
        description: form.querySelector('[data-field="description"]').value,
        serverHardwareUri: form.getAttribute("data-server-uri"),
        osDeploymentSettings: {osDeploymentPlanUri: plan.uri, osCustomAttributes: values}
      };
      A.clearErrors(form);
      I.busy(button, true);
      A.call("POST", "/rest/server-profiles", body).then(function (task) {
        var uri = task.associatedResource && task.associatedResource.resourceUri;
        var id = uri ? uri.split("/").pop() : "";
        window.location.assign(id ? "/ui/profiles/" + encodeURIComponent(id) : "/ui/tasks/" + encodeURIComponent(task.id));
      }, function (err) {
        I.busy(button, false);
        A.showErrors(form, err, A.locate(form));
      });
    });
  }

  /* --- a profile's page ------------------------------------------------------------------- */
  function initProfile(page) {
    var uri = page.getAttribute("data-profile-uri");
    var taskId = page.getAttribute("data-task");
    var leaving = false;

    function request(button, method, body, then) {
      if (!window.confirm(button.getAttribute("data-question"))) { return; }
      I.busy(button, true);
      I.api(method, uri, body).then(then, function (err) {
        I.busy(button, false);
        I.showError(err.message);
      });
    }

    function reload() {
      if (leaving) { return; }
      leaving = true;
      window.setTimeout(function () { window.location.reload(); }, RELOAD_MS);
    }

    page.addEventListener("click", function (event) {
      var target = event.target instanceof Element ? event.target : null;
      if (!target) { return; }
      var apply = target.closest("[data-profile-apply]");
      if (apply) {
        request(apply, "PATCH", REAPPLY, function () { window.location.reload(); });
        return;
      }
      var remove = target.closest("[data-profile-delete]");
      if (remove) { request(remove, "DELETE", undefined, function () { window.location.reload(); }); }
    });

    document.addEventListener("ingot:task", function (event) {
      var task = event.detail || {};
      if (!taskId || task.id !== taskId || leaving) { return; }
      if (Array.isArray(task.childTasks)) { addPhases(page, task.childTasks); }
      if (I.isActive(task.taskState)) { return; }
      if (page.getAttribute("data-profile-state") === "Deleting" && task.taskState === "Completed") {
        leaving = true;  // the profile is gone
        window.location.assign("/ui/profiles?deleted=" + encodeURIComponent(page.getAttribute("data-profile-name")));
        return;
      }
      reload();  // the profile's state (and its server's) changed with the task
    });
  }

  /* A phase that started since the page was rendered joins the timeline, drawn as the template
   * draws one (name, state badge, progress bar, status line); ui.js then polls it like the others. */
  function addPhases(page, children) {
    var list = page.querySelector("[data-phases]");
    var added = false;
    children.forEach(function (child) {
      var id = String(child.uri || "").split("/").pop();
      if (!id || page.querySelector('[data-phase="' + (window.CSS && CSS.escape ? CSS.escape(id) : id) + '"]')) { return; }
      if (!list) {
        list = el("ol", "steps");
        list.setAttribute("data-phases", "");
        var none = page.querySelector("[data-no-phases]");
        if (none) { none.parentNode.insertBefore(list, none); none.hidden = true; }
        else { page.querySelector("[data-profile-task-panel]").appendChild(list); }
      }
      list.appendChild(phaseItem(id, child));
      added = true;
    });
    if (added) { I.schedulePoll(); }
  }

  function phaseItem(id, child) {
    var state = String(child.taskState || "");
    var pct = Math.max(0, Math.min(100, Number(child.percentComplete) || 0));
    var li = el("li", "step");
    li.setAttribute("data-phase", id);
    var head = el("div", "server-task-head");
    head.appendChild(el("span", "step-name", child.name));
    head.appendChild(document.createTextNode(" "));
    var badge = el("span", "badge state-" + I.slug(state), state);
    badge.setAttribute("data-task-state", id);
    badge.setAttribute("data-state", state);
    head.appendChild(badge);
    li.appendChild(head);
    var bar = el("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("data-task-id", id);
    bar.setAttribute("data-state", state);
    bar.setAttribute("aria-label", "Progress of " + child.name);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(pct));
    var native = el("progress");
    native.max = 100;
    native.value = pct;
    native.setAttribute("aria-hidden", "true");
    bar.appendChild(native);
    bar.appendChild(el("span", "progress-label", pct + " %"));
    li.appendChild(bar);
    var status = el("div", "muted small status-line", child.taskStatus || "");
    status.setAttribute("data-task-status", id);
    li.appendChild(status);
    return li;
  }

  function start() {
    var form = document.querySelector("[data-profile-form]");
    if (form) { initWizard(form); }
    var page = document.querySelector("[data-profile-page]");
    if (page) { initProfile(page); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
