/* Ingot web UI: the golden images page (images.html). Builds on ui.js (window.Ingot).
 *
 * - Upload: the file goes to POST /rest/golden-images as multipart (part "file", name and
 *   description in the query, as HPE's SDK sends it) with XMLHttpRequest, whose upload events
 *   drive the progress bar; the 202 names the import task, and the page reloads to list it with
 *   its own progress bar (polled by ui.js).
 * - Delete: DELETE /rest/golden-images/{id} or /rest/os-volumes/{id}, then reload.
 * - Verify: POST /rest/golden-images/{id}/verify (a task that reads the file against its checksum).
 * - Clone: POST /rest/os-volumes (a linked clone, named in a prompt); Capture: POST
 *   /rest/golden-images with imageCapture (named in a prompt). Both are tasks: the page reloads
 *   to list them with their progress bars.
 * - Import: POST /rest/golden-images as JSON with sourceUrl or sourcePath (and sourceChecksum);
 *   a task, listed with its progress bar once the page reloads.
 * - Export raw / qcow2: POST /rest/os-volumes/{id}/export (a task); once it completes the page
 *   links the file. NBD / End NBD: POST or DELETE /rest/os-volumes/{id}/nbd, then reload.
 * Names and messages only ever go into textContent.
 */
(function () {
  "use strict";

  var I = window.Ingot;
  if (!I) { return; }

  function stem(fileName) {
    var dot = fileName.lastIndexOf(".");
    return dot > 0 ? fileName.slice(0, dot) : fileName;
  }

  function megabytes(bytes) { return (bytes / 1048576).toFixed(1) + " MiB"; }

  function upload(form) {
    var fileInput = form.querySelector("[data-upload-file]");
    var file = fileInput.files && fileInput.files[0];
    if (!file) { I.showError("Choose an image file first."); return; }
    var name = form.querySelector("[data-upload-name]").value.trim() || stem(file.name);
    var description = form.querySelector("[data-upload-description]").value.trim();
    var button = form.querySelector("[data-upload-button]");
    var box = form.querySelector("[data-upload-progress]");
    var bar = form.querySelector("[data-upload-bar]");
    var text = form.querySelector("[data-upload-text]");
    I.busy(button, true);
    box.hidden = false;
    bar.value = 0;
    text.textContent = "Starting…";
    I.upload("/rest/golden-images?name=" + encodeURIComponent(name) + "&description=" + encodeURIComponent(description),
             file, function (sent, total) {
               var percent = Math.floor(sent * 100 / total);
               bar.value = percent;
               text.textContent = "Sending " + megabytes(sent) + " of " + megabytes(total) + " (" + percent + "%)";
             }).then(function () {
      text.textContent = "Uploaded; the appliance is importing it.";
      window.location.reload();
    }, function (err) {
      I.busy(button, false);
      box.hidden = true;
      I.showError(err.message);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.matches || !form.matches("[data-image-upload]")) { return; }
    event.preventDefault();
    upload(form);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.matches || !form.matches("[data-image-import]")) { return; }
    event.preventDefault();
    var source = form.querySelector("[data-import-source]").value.trim();
    var body = {name: form.querySelector("[data-import-name]").value.trim()};
    var sha256 = form.querySelector("[data-import-sha256]").value.trim();
    body[/^https?:\/\//i.test(source) ? "sourceUrl" : "sourcePath"] = source;
    if (sha256) { body.sourceChecksum = sha256; }
    startTask(form.querySelector("[data-import-button]"), "/rest/golden-images", body);
  });

  function startTask(button, path, body) {
    I.busy(button, true);
    I.api("POST", path, body).then(function () {
      window.location.reload();  // the new task is listed with its progress bar
    }, function (err) { I.busy(button, false); I.showError(err.message); });
  }

  function change(button, method, path) {
    I.busy(button, true);
    I.api(method, path).then(function () {
      window.location.reload();
    }, function (err) { I.busy(button, false); I.showError(err.message); });
  }

  function remove(button, path, what) {
    if (!window.confirm("Delete " + what + "?")) { return; }
    change(button, "DELETE", path);
  }

  function volumePath(button, attribute) {
    return "/rest/os-volumes/" + encodeURIComponent(button.getAttribute(attribute));
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) { return; }
    var exportButton = target.closest("[data-export-volume]");
    if (exportButton) {
      startTask(exportButton, volumePath(exportButton, "data-export-volume") + "/export",
                {format: exportButton.getAttribute("data-format")});
      return;
    }
    var nbdButton = target.closest("[data-nbd-start]");
    if (nbdButton) {
      change(nbdButton, "POST", volumePath(nbdButton, "data-nbd-start") + "/nbd");
      return;
    }
    nbdButton = target.closest("[data-nbd-stop]");
    if (nbdButton) {
      change(nbdButton, "DELETE", volumePath(nbdButton, "data-nbd-stop") + "/nbd");
      return;
    }
    var button = target.closest("[data-delete-image]");
    if (button) {
      remove(button, "/rest/golden-images/" + encodeURIComponent(button.getAttribute("data-delete-image")),
             "golden image " + button.getAttribute("data-image-name"));
      return;
    }
    button = target.closest("[data-delete-volume]");
    if (button) {
      remove(button, "/rest/os-volumes/" + encodeURIComponent(button.getAttribute("data-delete-volume")),
             "OS volume " + button.getAttribute("data-volume-name"));
      return;
    }
    button = target.closest("[data-verify-image]");
    if (button) {
      startTask(button, "/rest/golden-images/" + encodeURIComponent(button.getAttribute("data-verify-image")) +
                "/verify", {});
      return;
    }
    button = target.closest("[data-clone-image]");
    if (button) {
      var volumeName = window.prompt("Name of the new OS volume (a linked clone of " +
                                     button.getAttribute("data-image-name") + "):");
      if (!volumeName || !volumeName.trim()) { return; }
      startTask(button, "/rest/os-volumes", {
        name: volumeName.trim(), goldenImageUri: "/rest/golden-images/" + button.getAttribute("data-clone-image")
      });
      return;
    }
    button = target.closest("[data-capture-volume]");
    if (button) {
      var imageName = window.prompt("Name of the golden image to capture from " +
                                    button.getAttribute("data-volume-name") + ":");
      if (!imageName || !imageName.trim()) { return; }
      startTask(button, "/rest/golden-images", {
        name: imageName.trim(), imageCapture: true,
        osVolumeURI: "/rest/os-volumes/" + button.getAttribute("data-capture-volume")
      });
    }
  });
}());
