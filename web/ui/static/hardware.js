/* Ingot web UI: server hardware pages (servers.html, server.html). Builds on ui.js (window.Ingot).
 *
 * - Buttons and forms call the REST API (cookie + X-CSRF-Token) and start tasks; each task's
 *   progress bar is put where the server's latest task is shown, and ui.js polls it.
 * - When a task ends, the servers it touched are re-read from GET /rest/server-hardware/{id} and
 *   their badges and fields updated in place (no reload: the console stays connected).
 * - Provision events (PUT .../provisionState): inspect starts a task like the power buttons; the
 *   others answer with the server at once, shown in place. The buttons of the events the new state
 *   does not allow are hidden (provisionEvents), and the inventory is redrawn after an inspection.
 * - A capture into a golden image (server.html's Provisioning panel; the form itself is a plain
 *   POST to /ui): while it runs, a phase that starts is added to its timeline, the server is re-read
 *   whenever a phase starts, ends or reports (capturing, capture-wait, ...), and when the task ends
 *   the page is loaded again (the result, the form back) unless the console is connected.
 * - The serial console is a WebSocket to /rest/server-hardware/{id}/console; output is appended to
 *   a <pre> as text, keystrokes are sent as typed.
 * Everything from the appliance or a BMC is untrusted: it only ever goes into textContent.
 */
(function () {
  "use strict";

  var I = window.Ingot;
  if (!I) { return; }
  var BASE = "/rest/server-hardware";
  var STATE_LABELS = { NoProfileApplied: "No profile applied" };
  var CONSOLE_LIMIT = 200000;  // characters kept in the console view
  var watchers = {};  // task id -> function(task), called once when the task has ended
  var handled = {};
  var statusSeen = {};  // task id -> the last status seen while it ran

  function all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function byAttr(name, value) {
    return all(document, "[" + name + '="' + (window.CSS && CSS.escape ? CSS.escape(value) : value) + '"]');
  }

  function serverIdOf(uri) {
    return typeof uri === "string" && uri.indexOf(BASE + "/") === 0 ? uri.slice(BASE.length + 1) : null;
  }

  function failed(task) { return ["Error", "Terminated", "Killed"].indexOf(task.taskState) >= 0; }

  function taskError(task) {
    var errors = task.taskErrors || [];
    return (errors[0] && errors[0].message) || task.taskStatus || ("Task " + task.name + " ended " + task.taskState);
  }

  /* --- task progress where a server's latest task is shown ----------------------------------- */
  function taskBlock(task) {
    var pct = Math.max(0, Math.min(100, Number(task.percentComplete) || 0));
    var head = make("div", "server-task-head");
    var link = make("a", "", task.name);
    link.href = "/ui/tasks/" + encodeURIComponent(task.id);
    var badge = make("span", "badge state-" + I.slug(task.taskState), task.taskState);
    badge.setAttribute("data-task-state", task.id);
    badge.setAttribute("data-state", task.taskState);
    head.appendChild(link);
    head.appendChild(document.createTextNode(" "));
    head.appendChild(badge);
    var bar = make("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("data-task-id", task.id);
    bar.setAttribute("data-state", task.taskState);
    bar.setAttribute("aria-label", "Progress of " + task.name);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(pct));
    var native = make("progress");
    native.max = 100;
    native.value = pct;
    native.setAttribute("aria-hidden", "true");
    bar.appendChild(native);
    bar.appendChild(make("span", "progress-label", pct + " %"));
    var status = make("div", "muted small status-line", task.taskStatus || "");
    status.setAttribute("data-task-status", task.id);
    return [head, bar, status];
  }

  /* Show ``task`` in ``slot`` (replacing what was there), follow it, call onEnd(task) once it ends. */
  function follow(slot, task, onEnd) {
    if (slot) {
      while (slot.firstChild) { slot.removeChild(slot.firstChild); }
      taskBlock(task).forEach(function (node) { slot.appendChild(node); });
      slot.hidden = false;
    }
    if (onEnd) { watchers[task.id] = onEnd; }
    I.applyTask(task);
    I.schedulePoll();
  }

  document.addEventListener("ingot:task", function (event) {
    var task = event.detail;
    if (task && I.isActive(task.taskState) && statusSeen[task.id] !== task.taskStatus) {
      // A running task moved on (e.g. an inspection now waits for the agent, so Abort is allowed):
      // re-read the server it works on.
      var first = !(task.id in statusSeen);
      statusSeen[task.id] = task.taskStatus;
      var running = serverIdOf(task.associatedResource && task.associatedResource.resourceUri);
      if (!first && running && byAttr("data-server", running).length) { refreshServer(running); }
    }
    if (!task || I.isActive(task.taskState) || handled[task.id]) { return; }
    handled[task.id] = true;
    var onEnd = watchers[task.id];
    delete watchers[task.id];
    if (onEnd) {
      onEnd(task);
      return;
    }
    // A task that was already running when the page loaded: re-read what it touched.
    var uri = task.associatedResource && task.associatedResource.resourceUri;
    if (uri === BASE) { refreshAll(); } else if (serverIdOf(uri)) { refreshServer(serverIdOf(uri)); }
  });

  function slotFor(id) { return byAttr("data-server-task", id)[0] || null; }

  /* --- updating a server's badges and fields ----------------------------------------------- */
  function setBadge(node, prefix, value, label) {
    node.textContent = label || value || "";
    node.className = "badge " + prefix + I.slug(value || "unknown");
    node.setAttribute("data-state", value || "");
  }

  function bootText(boot) {
    if (!boot || !boot.device) { return "unknown"; }
    var extras = [boot.persistent ? "persistent" : "next boot only"];
    if (boot.mode) { extras.push(boot.mode); }
    return boot.device + " (" + extras.join(", ") + ")";
  }

  /* The same rule as _hardware.html's provision_class. */
  function provisionClass(server) {
    var state = server.provisionState || "";
    if (/-failed$/.test(state)) { return "state-error"; }
    if (server.targetProvisionState) { return "state-running"; }
    if (state === "maintenance") { return "state-warning"; }
    return state === "enroll" || state === "retired" ? "sev-unknown" : "sev-ok";
  }

  function setField(node, field, server) {
    var value = server[field];
    switch (field) {
      case "provisionState":
        node.textContent = (value || "") + (server.targetProvisionState ? " → " + server.targetProvisionState : "");
        node.className = "badge " + provisionClass(server);
        node.setAttribute("data-state", value || "");
        if (server.lastError) { node.title = server.lastError; } else { node.removeAttribute("title"); }
        break;
      case "lastError": node.textContent = value ? "Last error: " + value : ""; node.hidden = !value; break;
      case "maintenanceFrom":
        node.textContent = value ? "back to " + value + " on Unmaintain" : "";
        node.hidden = !value;
        break;
      case "powerState": setBadge(node, "power-", value); break;
      case "status": setBadge(node, "sev-", value); break;
      case "state":
        setBadge(node, "hw-", value, STATE_LABELS[value] || value);
        if (server.stateReason) { node.title = server.stateReason; } else { node.removeAttribute("title"); }
        break;
      case "powerText": node.textContent = server.powerState || ""; break;
      case "bootDevice": node.textContent = bootText(value); break;
      case "stateReason": node.textContent = value || ""; node.hidden = !value; break;
      case "macAddresses":
        while (node.firstChild) { node.removeChild(node.firstChild); }
        (value || []).forEach(function (mac) {
          var li = make("li");
          li.appendChild(make("code", "", mac));
          node.appendChild(li);
        });
        if (!(value || []).length) { node.appendChild(make("li", "muted", "None reported.")); }
        break;
      case "lastContact":
        while (node.firstChild) { node.removeChild(node.firstChild); }
        if (value) {
          var time = make("time", "", value);
          time.setAttribute("datetime", value);
          node.appendChild(time);
          I.localTimes(node);
        } else {
          node.appendChild(make("span", "muted", "never"));
        }
        break;
      default: node.textContent = value === null || value === undefined ? "" : String(value);
    }
  }

  function updateServer(server) {
    byAttr("data-server", server.id).forEach(function (container) {
      container.setAttribute("data-server-name", server.name || "");
      all(container, "[data-sh-field]").forEach(function (node) {
        setField(node, node.getAttribute("data-sh-field"), server);
      });
      var allowed = server.provisionEvents || [];
      all(container, "[data-provision-event]").forEach(function (button) {
        button.hidden = allowed.indexOf(button.getAttribute("data-provision-event")) < 0;
      });
      all(container, "[data-inventory]").forEach(function (section) {
        if (section.getAttribute("data-inspected") !== (server.inspected || "")) { showInventory(section, server); }
      });
    });
  }

  /* --- the inventory inspection found (server.html's Inventory section, redrawn) ------------------- */
  function gib(bytes) { return typeof bytes === "number" ? (bytes / 1073741824).toFixed(1) + " GiB" : ""; }

  function table(attr, headers, rows) {
    var wrap = make("div", "table-wrap");
    var node = make("table", "table");
    node.setAttribute(attr, "");
    var head = make("tr");
    headers.forEach(function (text) { head.appendChild(make("th", "", text)); });
    node.appendChild(make("thead")).appendChild(head);
    var body = node.appendChild(make("tbody"));
    rows.forEach(function (cells) {
      var row = make("tr");
      cells.forEach(function (text) { row.appendChild(make("td", "", text)); });
      body.appendChild(row);
    });
    wrap.appendChild(node);
    return wrap;
  }

  function showInventory(section, server) {
    var inventory = server.hardwareInventory;
    section.setAttribute("data-inspected", server.inspected || "");
    while (section.firstChild) { section.removeChild(section.firstChild); }
    section.appendChild(make("h2", "", "Inventory"));
    if (!inventory) { section.appendChild(make("p", "empty", "Not inspected yet.")); return; }
    var cpu = inventory.cpu || {};
    var system = inventory.system || {};
    var when = make("time", "", server.inspected || "");
    when.setAttribute("datetime", server.inspected || "");
    var intro = make("p", "muted small", "What the deploy agent found on the server, ");
    intro.appendChild(when);
    intro.appendChild(document.createTextNode("."));
    section.appendChild(intro);
    var facts = make("dl", "facts");
    [["CPU", (cpu.count !== null && cpu.count !== undefined ? cpu.count + " × " : "") + (cpu.model || "unknown") +
              (cpu.architecture ? " (" + cpu.architecture + ")" : "")],
     ["Memory", server.memoryMb ? server.memoryMb + " MiB" : "unknown"],
     ["System", [system.sys_vendor, system.product_name].filter(Boolean).join(" ")],
     ["System serial", system.product_serial || ""], ["BIOS version", system.bios_version || ""]
    ].forEach(function (fact) {
      var item = make("div");
      item.appendChild(make("dt", "", fact[0]));
      item.appendChild(make("dd", "", fact[1]));
      facts.appendChild(item);
    });
    section.appendChild(facts);
    var disks = inventory.disks || [];
    section.appendChild(make("h3", "", "Disks"));
    section.appendChild(disks.length ? table("data-inventory-disks",
      ["Name", "Size", "Type", "Model", "Vendor", "Serial", "WWN"], disks.map(function (d) {
        return [d.name || "", gib(d.size_bytes), (d.rotational ? "HDD" : "SSD") + (d.removable ? ", removable" : ""),
                d.model || "", d.vendor || "", d.serial || "", d.wwn || ""];
      })) : make("p", "empty", "No disks reported."));
    var nics = inventory.nics || [];
    section.appendChild(make("h3", "", "NICs"));
    section.appendChild(nics.length ? table("data-inventory-nics", ["Name", "MAC", "Link", "Speed", "Driver"],
      nics.map(function (n) {
        return [n.name || "", n.mac || "", n.link ? "up" : "down", n.speed_mbps ? n.speed_mbps + " Mb/s" : "",
                n.driver || ""];
      })) : make("p", "empty", "No NICs reported."));
    I.localTimes(section);
  }

  function serverGone(id) {
    if (document.querySelector("[data-server-page]")) {
      window.location.assign("/ui/servers");
      return;
    }
    byAttr("data-server", id).forEach(function (row) { row.remove(); });
  }

  function refreshServer(id) {
    return I.api("GET", BASE + "/" + encodeURIComponent(id)).then(updateServer, function (err) {
      if (err.status === 404) { serverGone(id); }
    });
  }

  function refreshAll() {
    var seen = {};
    all(document, "[data-server]").forEach(function (node) {
      var id = node.getAttribute("data-server");
      if (!seen[id]) { seen[id] = true; refreshServer(id); }
    });
  }

  /* --- actions ------------------------------------------------------------------------------ */
  function run(button, method, path, body, slot, onEnd) {
    var question = button && button.getAttribute("data-question");
    if (question && !window.confirm(question)) { return; }
    if (button) { I.busy(button, true); }
    I.api(method, path, body).then(function (task) {
      if (button) { I.busy(button, false); }
      follow(slot, task, onEnd);
    }, function (err) {
      if (button) { I.busy(button, false); }
      I.showError(err.message);
    });
  }

  /* A provision event: inspect answers with its task (followed like a power action), the others
     with the server in its new state. A refused event shows the appliance's message and the events
     the state allows (the error's details). */
  function provision(button) {
    var id = button.getAttribute("data-provision");
    var question = button.getAttribute("data-question");
    if (question && !window.confirm(question)) { return; }
    I.busy(button, true);
    I.api("PUT", BASE + "/" + encodeURIComponent(id) + "/provisionState", {
      event: button.getAttribute("data-provision-event")
    }).then(function (result) {
      I.busy(button, false);
      if (result.category === "tasks") {
        follow(slotFor(id), result, afterServerTask(id));
        refreshServer(id);  // now inspecting: no event is allowed until it waits for the agent
      } else {
        updateServer(result);
      }
    }, function (err) {
      I.busy(button, false);
      I.showError(err.details ? err.message + " " + err.details : err.message);
      refreshServer(id);
    });
  }

  function afterServerTask(id) {
    return function (task) {
      if (failed(task)) { I.showError(taskError(task)); }
      refreshServer(id);
    };
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) { return; }
    var button = target.closest("[data-power]");
    if (button) {
      var id = button.getAttribute("data-power");
      run(button, "PUT", BASE + "/" + encodeURIComponent(id) + "/powerState", {
        powerState: button.getAttribute("data-power-state"),
        powerControl: button.getAttribute("data-power-control")
      }, slotFor(id), afterServerTask(id));
      return;
    }
    button = target.closest("[data-provision]");
    if (button) { provision(button); return; }
    button = target.closest("[data-refresh]");
    if (button) {
      var refreshId = button.getAttribute("data-refresh");
      run(button, "PUT", BASE + "/" + encodeURIComponent(refreshId) + "/refreshState",
          { refreshState: "RefreshPending" }, slotFor(refreshId), afterServerTask(refreshId));
      return;
    }
    button = target.closest("[data-remove]");
    if (button) {
      var removeId = button.getAttribute("data-remove");
      run(button, "DELETE", BASE + "/" + encodeURIComponent(removeId), undefined, slotFor(removeId), function (task) {
        if (failed(task)) { I.showError(taskError(task)); refreshServer(removeId); } else { serverGone(removeId); }
      });
      return;
    }
    button = target.closest("[data-power-sync]");
    if (button) {
      run(button, "POST", BASE + "/power-sync", undefined, slotFor("fleet"), function (task) {
        if (failed(task)) { I.showError(taskError(task)); }
        refreshAll();
      });
      return;
    }
    button = target.closest("[data-enrol]");
    if (button) { enrol(button); return; }
    button = target.closest("[data-console-connect]");
    if (button) { consoleConnect(button.getAttribute("data-console-connect")); return; }
    if (target.closest("[data-console-disconnect]")) { consoleDisconnect(); }
  });

  function input(form, name) { return form.elements.namedItem(name); }

  function val(form, name) { return input(form, name).value; }

  function ports(text) {
    return String(text || "").split(/[\s,]+/).filter(Boolean).map(Number);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var submit = form.querySelector('button[type="submit"]');
    if (form.hasAttribute("data-add-server")) {
      event.preventDefault();
      var body = { hostname: val(form, "hostname").trim(), username: val(form, "username"),
                   password: val(form, "password"), driver: val(form, "driver") };
      if (val(form, "port")) { body.port = Number(val(form, "port")); }
      if (val(form, "name").trim()) { body.name = val(form, "name").trim(); }
      I.busy(submit, true);
      I.api("POST", BASE, body).then(function () {
        window.location.reload();  // the new server is listed with its Add task's progress bar
      }, function (err) { I.busy(submit, false); I.showError(err.message); });
    } else if (form.hasAttribute("data-discover")) {
      event.preventDefault();
      discover(form, submit);
    } else if (form.hasAttribute("data-boot-device")) {
      event.preventDefault();
      var id = form.getAttribute("data-boot-device");
      run(submit, "PUT", BASE + "/" + encodeURIComponent(id) + "/bootDevice", {
        device: val(form, "device"), persistent: input(form, "persistent").checked,
        mode: val(form, "mode") || null
      }, slotFor(id), afterServerTask(id));
    }
  });

  /* --- discovery ---------------------------------------------------------------------------- */
  var found = [];

  function discover(form, submit) {
    var panel = document.querySelector("[data-discovery]");
    var table = document.querySelector("[data-discovery-results]");
    var empty = document.querySelector("[data-discovery-empty]");
    table.hidden = true;
    empty.hidden = true;
    panel.hidden = false;
    run(submit, "POST", BASE + "/discover", {
      cidr: val(form, "cidr").trim(), ipmiPorts: ports(val(form, "ipmiPorts")),
      redfishPorts: ports(val(form, "redfishPorts"))
    }, slotFor("discovery"), function (task) {
      if (failed(task)) { I.showError(taskError(task)); return; }
      found = ((task.data || {}).found || []).slice();
      showFound(table, empty);
    });
  }

  function describe(detail) {
    if (!detail || typeof detail !== "object") { return detail ? String(detail) : ""; }
    return Object.keys(detail).filter(function (key) {
      var value = detail[key];
      return value !== null && value !== undefined && value !== "" && !(Array.isArray(value) && !value.length);
    }).map(function (key) {
      var value = detail[key];
      return key + "=" + (typeof value === "object" ? JSON.stringify(value) : String(value));
    }).join(", ");
  }

  function enrolledLink(uri) {
    var id = serverIdOf(uri);
    if (!id) { return make("span", "badge hw-noprofileapplied", "Enrolled"); }
    var link = make("a", "", "Enrolled");
    link.href = "/ui/servers/" + encodeURIComponent(id);
    return link;
  }

  function showFound(table, empty) {
    var body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!found.length) { empty.hidden = false; return; }
    found.forEach(function (item, index) {
      var row = make("tr");
      row.setAttribute("data-found", String(index));
      row.appendChild(make("td", "", item.address));
      row.appendChild(make("td", "", item.port));
      row.appendChild(make("td", "", item.protocol));
      row.appendChild(make("td", "small", describe(item.detail)));
      var cell = make("td", "actions");
      cell.setAttribute("data-found-state", String(index));
      if (item.enrolled) {
        cell.appendChild(enrolledLink(item.serverHardwareUri));
      } else {
        var button = make("button", "btn btn-small btn-primary", "Enrol");
        button.type = "button";
        button.setAttribute("data-enrol", String(index));
        cell.appendChild(button);
      }
      row.appendChild(cell);
      body.appendChild(row);
    });
    table.hidden = false;
  }

  function enrol(button) {
    var item = found[Number(button.getAttribute("data-enrol"))];
    var form = document.querySelector("[data-discover]");
    if (!item || !form) { return; }
    if (!val(form, "username")) {
      I.showError("Enter the BMC user name and password in the discovery form to enrol.");
      input(form, "username").focus();
      return;
    }
    var cell = button.parentNode;
    var protocol = item.protocol === "redfish" ? "redfish" : item.protocol === "fake" ? "fake" : "ipmi";
    I.busy(button, true);
    var body = { hostname: item.address, port: item.port, driver: protocol,
                 username: val(form, "username"), password: val(form, "password") };
    I.api("POST", BASE, body).then(function (task) {
      var slot = make("div", "server-task");
      while (cell.firstChild) { cell.removeChild(cell.firstChild); }
      cell.appendChild(slot);
      follow(slot, task, function (done) {
        if (failed(done)) { I.showError(item.address + ": " + taskError(done)); return; }
        item.enrolled = true;
        item.serverHardwareUri = done.associatedResource && done.associatedResource.resourceUri;
        while (cell.firstChild) { cell.removeChild(cell.firstChild); }
        cell.appendChild(enrolledLink(item.serverHardwareUri));
      });
    }, function (err) { I.busy(button, false); I.showError(item.address + ": " + err.message); });
  }

  /* --- the server's capture into a golden image ------------------------------------------------ */
  var CAPTURE_RELOAD_MS = 600;
  var capture = { status: null, ended: false };

  /* A phase that started since the page was rendered, drawn as the template draws one. */
  function phaseItem(id, child) {
    var li = make("li", "step");
    li.setAttribute("data-phase", id);
    taskBlock({ id: id, name: child.name, taskState: child.taskState, percentComplete: child.percentComplete,
                taskStatus: child.taskStatus }).forEach(function (node) { li.appendChild(node); });
    return li;
  }

  function addPhases(block, children) {
    var list = block.querySelector("[data-capture-phases]");
    var added = false;
    children.forEach(function (child) {
      var id = String(child.uri || "").split("/").pop();
      if (!id || block.querySelector('[data-phase="' + (window.CSS && CSS.escape ? CSS.escape(id) : id) + '"]')) {
        return;
      }
      if (!list) {
        list = make("ol", "steps");
        list.setAttribute("data-capture-phases", "");
        var none = block.querySelector("[data-no-phases]");
        if (none) { none.parentNode.insertBefore(list, none); none.hidden = true; } else { block.appendChild(list); }
      }
      list.appendChild(phaseItem(id, child));
      added = true;
    });
    if (added) { I.schedulePoll(); }
  }

  document.addEventListener("ingot:task", function (event) {
    var task = event.detail;
    var block = document.querySelector("[data-capture-task]");
    var page = document.querySelector("[data-server-page]");
    if (!task || !block || !page || capture.ended || task.id !== block.getAttribute("data-capture-task")) { return; }
    var serverId = page.getAttribute("data-server");
    if (Array.isArray(task.childTasks)) { addPhases(block, task.childTasks); }
    if (I.isActive(task.taskState)) {
      // The provision state moves with the phases (capture-wait once the agent is booting, capturing
      // while the OS boots again, deployed): re-read the server when a phase starts, ends or says more.
      var seen = JSON.stringify([task.taskStatus, (task.childTasks || []).map(function (child) {
        return [child.taskState, child.taskStatus];
      })]);
      if (capture.status !== null && capture.status !== seen) { refreshServer(serverId); }
      capture.status = seen;
      return;
    }
    capture.ended = true;
    if (socket) {  // keep the console: update in place
      if (failed(task)) { I.showError(taskError(task)); }
      refreshServer(serverId);
      return;
    }
    window.setTimeout(function () { window.location.reload(); }, CAPTURE_RELOAD_MS);
  });

  /* --- serial console ----------------------------------------------------------------------- */
  var socket = null;
  var screen = "";
  var decoder = null;
  var CLOSE_REASONS = {
    4401: "Not signed in any more: reload the page.",
    4403: "Your role may not use the console (Operator or above).",
    4404: "This server does not exist any more."
  };
  var KEYS = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
    ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~",
    PageUp: "\x1b[5~", PageDown: "\x1b[6~"
  };

  function consoleParts() {
    return {
      output: document.querySelector("[data-console-output]"),
      status: document.querySelector("[data-console-status]"),
      connect: document.querySelector("[data-console-connect]"),
      disconnect: document.querySelector("[data-console-disconnect]")
    };
  }

  function consoleState(text, connected) {
    var parts = consoleParts();
    parts.status.textContent = text;
    parts.connect.hidden = connected;
    parts.disconnect.hidden = !connected;
  }

  /* Terminal output as plain text: escape sequences dropped, CR LF as a newline, backspace erases. */
  function write(text) {
    // eslint-disable-next-line no-control-regex
    text = text.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "").replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "")
      .replace(/\x1b[()][0-9A-Za-z]/g, "").replace(/\x1b./g, "").replace(/\r\n/g, "\n");
    for (var i = 0; i < text.length; i += 1) {
      var ch = text.charAt(i);
      if (ch === "\b" || ch === "\x7f") {
        screen = screen.slice(0, -1);
      } else if (ch === "\n" || ch === "\t" || ch >= " ") {
        screen += ch;
      }
    }
    if (screen.length > CONSOLE_LIMIT) { screen = screen.slice(screen.length - CONSOLE_LIMIT); }
    var output = consoleParts().output;
    output.textContent = screen;
    output.scrollTop = output.scrollHeight;
  }

  function consoleConnect(id) {
    if (socket) { return; }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + window.location.host + BASE + "/" + encodeURIComponent(id) + "/console?csrf=" +
      encodeURIComponent(I.csrf);
    decoder = new TextDecoder("utf-8");
    consoleState("Connecting…", true);
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () {
      consoleState("Connected. Click the console and type.", true);
      consoleParts().output.focus();
    };
    socket.onmessage = function (event) {
      write(typeof event.data === "string" ? event.data : decoder.decode(new Uint8Array(event.data), { stream: true }));
    };
    socket.onclose = function (event) {
      socket = null;
      var reason = CLOSE_REASONS[event.code] ||
        (event.code === 1000 || event.code === 1005 ? "Disconnected." :
          "Closed: " + (event.reason || "the connection ended (code " + event.code + ")."));
      consoleState(reason, false);
    };
  }

  function consoleDisconnect() {
    if (socket) { socket.close(1000, "closed by the user"); }
  }

  function send(text) {
    if (socket && socket.readyState === WebSocket.OPEN && text) { socket.send(text); }
  }

  document.addEventListener("keydown", function (event) {
    if (!(event.target instanceof Element) || !event.target.matches("[data-console-output]") || !socket) { return; }
    if (event.metaKey || (event.ctrlKey && event.shiftKey)) { return; }  // the browser's own shortcuts
    var key = event.key;
    var data = "";
    if (event.ctrlKey && key.length === 1 && /[a-z@[\\\]^_]/i.test(key)) {
      data = String.fromCharCode(key.toUpperCase().charCodeAt(0) & 0x1f);
    } else if (KEYS[key]) {
      data = KEYS[key];
    } else if (key.length === 1 && !event.ctrlKey && !event.altKey) {
      data = key;
    }
    if (data) {
      event.preventDefault();
      send(data);
    }
  });

  document.addEventListener("paste", function (event) {
    if (!(event.target instanceof Element) || !event.target.matches("[data-console-output]") || !socket) { return; }
    event.preventDefault();
    send((event.clipboardData.getData("text") || "").replace(/\r?\n/g, "\r"));
  });

  window.addEventListener("pagehide", consoleDisconnect);
}());
